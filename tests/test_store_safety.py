"""Issue 17 (2, 4, 8): the pseudonym key stays outside the store, demo mode holds for every
caller, and a hostile ``--db`` gets one ``error:`` line and is never written."""
from __future__ import annotations

import hashlib
import hmac
import os
import re
import stat
import warnings

import duckdb
import numpy as np
import pandas as pd
import pytest
from PIL import Image

import cli
from core.errors import InputError, PseudonymKeyError
from core.store import StoreNotice, create_store, keys, open_store
from core.store.schema import SALTED_VERSION, STUDY_TABLES
from tests.conftest import copy_store


# ---------------------------------------------------------------------------- helpers
def png_site(root, patients=("20481234", "20481234", "31170055", "31170055")):
    """Four PNGs (two exams) and a manifest naming each exam's 8-digit hospital number."""
    rng = np.random.default_rng(0)
    for name in ("0_L_CC", "0_R_CC", "1_L_CC", "1_R_CC"):
        (root / "site").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 4096, (32, 24)).astype(np.uint16)).save(
            root / "site" / f"{name}.png")
    pd.DataFrame({"exam": [0, 0, 1, 1], "laterality": ["L", "R", "L", "R"],
                  "cancer": [1, 0, 0, 0], "patient": list(patients)}).to_csv(
        root / "m.csv", index=False)
    return root / "site", root / "m.csv"


def import_png(db, root, *extra) -> int:
    folder, manifest = png_site(root)
    return cli.main(["import", "png", str(folder), "--manifest", str(manifest), "--db", str(db),
                     *extra])


def store_bytes(db) -> list[bytes]:
    """Every byte the store leaves on disk: the file, its WAL, its files folder."""
    files = [db, db.with_name(db.name + ".wal")]
    files_dir = db.with_name(db.stem + "_files")
    if files_dir.exists():
        files += sorted(p for p in files_dir.rglob("*") if p.is_file())
    return [p.read_bytes() for p in files if p.exists()]


def snapshot(db) -> dict:
    """Hashes of every file of a store (its file, WAL, files folder): equal = untouched."""
    paths = [db, db.with_name(db.name + ".wal")]
    files_dir = db.with_name(db.stem + "_files")
    if files_dir.exists():
        paths += sorted(p for p in files_dir.rglob("*"))
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in paths if p.exists()}


def candidate_keys(db) -> set[bytes]:
    """What an attacker holding only the store could try as the HMAC key: every text value of
    every table, and every printable run of 16+ characters in its raw bytes."""
    candidates = set()
    with duckdb.connect(str(db), read_only=True) as con:
        for table, column in con.execute(
                "SELECT table_name, column_name FROM information_schema.columns "
                "WHERE data_type = 'VARCHAR'").fetchall():
            candidates |= {str(v).encode() for (v,) in con.execute(
                f'SELECT DISTINCT "{column}" FROM "{table}" WHERE "{column}" IS NOT NULL'
            ).fetchall()}
    for data in store_bytes(db):
        candidates |= set(re.findall(rb"[\x20-\x7e]{16,}", data))
    return candidates | {c.strip().lower() for c in candidates}


def recovered(db, identifier: str, pseudonym: str) -> list[bytes]:
    """Candidate keys from the store that map ``identifier`` to ``pseudonym``."""
    return [k for k in candidate_keys(db)
            if "P" + hmac.new(k, identifier.encode(), hashlib.sha256).hexdigest()[:16]
            == pseudonym]


def make_v3(db, salt: str) -> None:
    """Turn a current store back into what schema v3 wrote: the salt in ``meta``."""
    with duckdb.connect(str(db)) as con:
        con.execute("DELETE FROM meta WHERE key = 'key_fingerprint'")
        con.execute("INSERT INTO meta VALUES ('salt', ?)", [salt])
        con.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'",
                    [str(SALTED_VERSION)])
        for table in reversed(STUDY_TABLES):  # v5 added them
            con.execute(f"DROP TABLE {table}")


def meta(db) -> dict[str, str]:
    with duckdb.connect(str(db), read_only=True) as con:
        return dict(con.execute("SELECT key, value FROM meta").fetchall())


def one_error_line(capsys) -> str:
    """The one line on stderr besides progress bars (tqdm's ``%|`` segments)."""
    err = capsys.readouterr().err
    lines = [line for line in re.split(r"[\r\n]", err) if line.strip() and "%|" not in line]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture
def no_key(tmp_path, monkeypatch):
    """No key configured: the default key file under an empty configuration folder."""
    monkeypatch.delenv(keys.KEY_ENV, raising=False)
    monkeypatch.delenv(keys.KEY_FILE_ENV, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    return tmp_path / "config" / "ilcscope" / "pseudonym.key"


# ---------------------------------------------------------------------------- finding 2
def test_key_file_is_made_0600_on_first_import_and_reads_never_need_it(tmp_path, no_key):
    db = tmp_path / "s.duckdb"
    open_store(db)
    assert open_store(db, read_only=True).counts()["exams"] == 0
    assert not no_key.exists()  # creating and reading a store needs no key
    assert import_png(db, tmp_path) == 0
    assert stat.S_IMODE(no_key.stat().st_mode) == 0o600
    assert stat.S_IMODE(no_key.parent.stat().st_mode) == 0o700
    key = no_key.read_text().strip()
    assert re.fullmatch(r"[0-9a-f]{64}", key)
    exams = open_store(db, read_only=True).exams()
    assert set(exams["patient"]) == {keys.pseudonym(key.encode(), p)
                                     for p in ("20481234", "31170055")}
    assert meta(db)["key_fingerprint"] == keys.fingerprint(key.encode())


def test_store_and_files_folder_hold_no_key_nor_identifier(tmp_path, pseudonym_key_file):
    db = tmp_path / "s.duckdb"
    assert import_png(db, tmp_path) == 0
    open_store(db).checkpoint()
    key = pseudonym_key_file.read_text().strip()
    needles = [key.encode(), key.upper().encode(), bytes.fromhex(key), b"salt",
               b"20481234", b"31170055"]
    assert b"".join(store_bytes(db))  # something was read
    for data in store_bytes(db):
        assert not [n for n in needles if n in data]


def test_brute_force_from_the_store_alone_finds_nothing(tmp_path, pseudonym_key_file):
    """An attacker with the store tries every string in it as the key: no match. The same
    attack on a v3-style store (salt in meta) recovers the key: the test can fail."""
    db = tmp_path / "s.duckdb"
    assert import_png(db, tmp_path) == 0
    open_store(db).checkpoint()
    patient = open_store(db, read_only=True).exams().set_index("exam_key").loc["0", "patient"]
    assert recovered(db, "20481234", patient) == []
    key = pseudonym_key_file.read_text().strip()
    with duckdb.connect(str(db)) as con:  # the old design: the key beside the pseudonyms
        con.execute("INSERT INTO meta VALUES ('salt', ?)", [key])
    assert recovered(db, "20481234", patient) == [key.encode()]


def test_same_key_same_pseudonym_in_every_store_and_from_the_variable(tmp_path, monkeypatch):
    a = open_store(tmp_path / "a.duckdb")
    b = open_store(tmp_path / "b.duckdb")
    assert a.pseudonym("20481234") == b.pseudonym("20481234")  # one site, one key
    other = open_store(tmp_path / "c.duckdb", key_file=tmp_path / "other.key")
    assert other.pseudonym("20481234") != a.pseudonym("20481234")
    text = (tmp_path / "other.key").read_text().strip()
    monkeypatch.setenv(keys.KEY_ENV, text)  # a shared key given by the environment instead
    assert open_store(tmp_path / "d.duckdb").pseudonym("20481234") == \
        other.pseudonym("20481234")


def test_import_with_another_key_is_refused_in_one_line(tmp_path, monkeypatch, capsys):
    db = tmp_path / "s.duckdb"
    assert import_png(db, tmp_path / "first") == 0
    before, counts = snapshot(db), open_store(db, read_only=True).counts()
    capsys.readouterr()
    monkeypatch.setenv(keys.KEY_FILE_ENV, str(tmp_path / "another.key"))
    assert import_png(db, tmp_path / "second") == 2
    line = one_error_line(capsys)
    assert "fingerprint" in line and "would not match" in line
    assert (tmp_path / "another.key").read_text().strip() not in line  # the key never shows
    assert open_store(db, read_only=True).counts() == counts
    assert snapshot(db) == before


@pytest.mark.parametrize("keyed", ["none", "salt", "other"])
def test_v3_salt_leaves_the_store_and_is_never_lost(tmp_path, no_key, monkeypatch, keyed):
    db = tmp_path / "s.duckdb"
    salt = "0123456789abcdef0123456789abcdef"  # what v3 kept in meta.salt
    old = "P" + hmac.new(salt.encode(), b"20481234", hashlib.sha256).hexdigest()[:16]
    store = open_store(db)
    store.write_tables({"exams": pd.DataFrame([{"exam_id": "x/1", "dataset": "x",
                                                "exam_key": "1", "patient": old}])})
    store.checkpoint()
    make_v3(db, salt)
    if keyed == "salt":     # the user supplies the old key: nothing to save
        keys.write_key_file(no_key, salt)
    elif keyed == "other":  # a site key exists already: the salt is saved beside it
        keys.write_key_file(no_key, "f" * 64)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        store = open_store(db)
    notes = [str(w.message) for w in caught if issubclass(w.category, StoreNotice)]
    saved = {"none": no_key, "salt": None,
             "other": no_key.with_name(f"pseudonym-{keys.fingerprint(salt.encode())}.key")}[keyed]
    if saved is None:
        assert notes == []
    else:
        assert len(notes) == 1 and str(saved) in notes[0] and salt not in notes[0]
        assert saved.read_text().strip() == salt
        assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    store.checkpoint()
    stored = meta(db)
    assert "salt" not in stored and stored["key_fingerprint"] == keys.fingerprint(salt.encode())
    assert not [d for d in store_bytes(db) if salt.encode() in d]  # freed blocks too
    if keyed == "other":
        with pytest.raises(PseudonymKeyError, match=f"pseudonym-{stored['key_fingerprint']}"):
            store.pseudonym("20481234")
        monkeypatch.setenv(keys.KEY_FILE_ENV, str(saved))
        store = open_store(db)
    assert store.pseudonym("20481234") == old  # the old pseudonyms still match


def test_v3_migration_message_reaches_the_cli_as_one_warning_line(tmp_path, no_key, capsys):
    db = tmp_path / "s.duckdb"
    open_store(db).checkpoint()
    make_v3(db, "ab" * 16)
    assert cli.main(["info", "--db", str(db), "--json"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("warning: store ") and str(no_key) in err[0]


def test_a_malformed_key_is_refused_without_echoing_it(tmp_path, monkeypatch):
    monkeypatch.setenv(keys.KEY_ENV, "not-hex-20481234")
    with pytest.raises(PseudonymKeyError, match="not a hex string") as info:
        open_store(tmp_path / "s.duckdb").pseudonym("x")
    assert "20481234" not in str(info.value)


# ---------------------------------------------------------------------------- finding 4
@pytest.fixture(scope="module")
def demo_copy(demo_store_path, tmp_path_factory):
    return copy_store(demo_store_path, tmp_path_factory.mktemp("demo-mode"))


def write_commands(db, tmp_path) -> dict[str, list[str]]:
    image = open_store(db, read_only=True).images()["image_id"].iloc[0]
    folder, manifest = png_site(tmp_path)
    table = tmp_path / "scores.csv"
    pd.DataFrame({"image_id": [image], "score": [0.5]}).to_csv(table, index=False)
    return {
        "demo": ["demo", "--n-exams", "4", "--no-models"],
        "testsets create": ["testsets", "create", "x", "--rule", "split=test"],
        "testsets delete": ["testsets", "delete", "demo"],
        "images set-laterality": ["images", "set-laterality", image, "L"],
        "import png": ["import", "png", str(folder), "--manifest", str(manifest)],
        "import mias": ["import", "mias", str(folder)],
        "import dicom": ["import", "dicom", str(folder)],
        "import csaw": ["import", "csaw", str(table)],
        "import predictions": ["import", "predictions", str(table), "--model", "m"],
        "import readers": ["import", "readers", str(table), "--reader", "r"],
        "density estimate": ["density", "estimate", "--test-set", "demo", "--method", "classical"],
        "filters run": ["filters", "run", "--test-set", "demo", "--workers", "1"],
        "predict --overwrite": ["predict", "--model", "demo", "--test-set", "demo",
                                "--overwrite"],
        "init": ["init"],
    }


def test_demo_mode_refuses_every_cli_write_and_changes_nothing(demo_copy, tmp_path,
                                                              monkeypatch, capsys):
    commands = write_commands(demo_copy, tmp_path)
    monkeypatch.setenv("ILCSCOPE_MODE", "demo")
    before = snapshot(demo_copy)
    for name, argv in commands.items():
        assert cli.main([*argv, "--db", str(demo_copy)]) == 2, name
        assert "demo mode" in one_error_line(capsys), name
        assert snapshot(demo_copy) == before, name
    assert cli.main(["info", "--db", str(demo_copy), "--json"]) == 0  # reads still work
    assert snapshot(demo_copy) == before


def test_demo_mode_holds_for_library_callers(demo_copy, tmp_path, monkeypatch):
    monkeypatch.setenv("ILCSCOPE_MODE", "Demo ")
    before = snapshot(demo_copy)
    with pytest.raises(InputError, match="demo mode"):
        open_store(demo_copy)
    with pytest.raises(InputError, match="demo mode"):
        open_store(tmp_path / "new.duckdb")  # nothing created either
    assert not (tmp_path / "new.duckdb").exists()
    store = open_store(demo_copy, read_only=True)
    with pytest.raises(InputError, match="read-only"):
        store.create_testset("x", "split=test")
    with pytest.raises(InputError, match="already exists"):
        create_store(demo_copy)
    assert snapshot(demo_copy) == before
    fresh = create_store(tmp_path / "first-run.duckdb")  # the hosted demo's first start
    assert fresh.counts()["exams"] == 0


# ---------------------------------------------------------------------------- finding 8
@pytest.fixture(scope="module")
def real_store(demo_store_path) -> bytes:
    with duckdb.connect(str(demo_store_path), read_only=True):
        pass
    return demo_store_path.read_bytes()


def hostile(kind: str, path, real: bytes):
    if kind == "text":
        path.write_text("exam_id,patient\n1,20481234\n")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "folder":
        path.mkdir()
    elif kind.startswith("truncated"):
        path.write_bytes(real[:int(len(real) * float(kind.split("-")[1]))])
    elif kind == "foreign":
        with duckdb.connect(str(path)) as con:
            con.execute("CREATE TABLE accounts (id INTEGER, name VARCHAR)")
            con.execute("INSERT INTO accounts VALUES (1, 'x')")
    elif kind == "foreign-meta":
        with duckdb.connect(str(path)) as con:
            con.execute("CREATE TABLE meta (id INTEGER, note VARCHAR)")


KINDS = ["text", "empty", "folder", "truncated-0.001", "truncated-0.02", "truncated-0.3",
         "truncated-0.6", "foreign", "foreign-meta"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("argv", [["info"], ["testsets", "create", "x", "--rule", "split=test"],
                                  ["init"]], ids=["read", "write", "init"])
def test_hostile_db_gets_one_error_line_and_is_not_written(kind, argv, tmp_path, real_store,
                                                           capsys):
    db = tmp_path / "given.duckdb"
    hostile(kind, db, real_store)
    before = snapshot(db) if db.is_file() else None
    code = cli.main([*argv, "--db", str(db)])
    if code == 0 and argv == ["init"] and kind.startswith("truncated"):
        # init reads the header, meta and row counts only: a cut that spared them (it depends
        # on the file's layout) is found by the first command that reads the rows, in one line
        capsys.readouterr()
        assert snapshot(db) == before
        code = cli.main(["info", "--db", str(db)])
    assert code == 2
    line = one_error_line(capsys)
    assert str(db) in line
    if before is not None:
        assert snapshot(db) == before
    if kind.startswith("foreign"):
        assert "not an ILCscope store" in line


def test_missing_folder_for_a_read_is_one_line(tmp_path, capsys):
    db = tmp_path / "missing" / "s.duckdb"
    assert cli.main(["info", "--db", str(db)]) == 2
    assert "does not exist" in one_error_line(capsys)
    assert not db.parent.exists()


def test_a_blank_duckdb_file_becomes_a_store(tmp_path):
    """What a kill during creation leaves (a DuckDB file without tables) is not refused."""
    db = tmp_path / "s.duckdb"
    duckdb.connect(str(db)).close()
    assert open_store(db).counts()["exams"] == 0


def test_salt_rewrite_keeps_every_row_and_leaves_no_salt(tmp_path, demo_store_path, no_key):
    """The v4 migration rewrites the file, as DuckDB keeps deleted values in freed blocks of a
    store this size: every table and row survives, the files folder is untouched."""
    db = copy_store(demo_store_path, tmp_path)
    counts = open_store(db, read_only=True).counts()
    files = os.listdir(db.with_name(db.stem + "_files"))
    make_v3(db, "cd" * 16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StoreNotice)
        store = open_store(db)
    assert store.counts() == counts
    assert os.listdir(db.with_name(db.stem + "_files")) == files
    assert not db.with_name(db.name + ".rewrite").exists()
    store.checkpoint()
    assert not [d for d in store_bytes(db) if b"cd" * 16 in d]  # not even in freed blocks
