"""Hostile tables: pickles that try to run code, cells that spreadsheets execute, and Parquet
columns whose types are not scores (issue 17, findings 1 and 8).

Each crafted pickle is first loaded by plain `pickle.loads` (in a child process where it may
crash), which proves the payload is live; then ILCscope's readers must refuse it with one
`InputError` line and leave no trace.
"""
from __future__ import annotations

import csv
import io
import pickle
import struct
import subprocess
import sys
import time
from datetime import date

import numpy as np
import pandas as pd
import pytest

from core.errors import InputError
from core.importers.png import read_manifest
from core.importers.tables import import_predictions, import_readers
from core.io.tables import PickledArray, load_plain_pickle, read_table
from core.stats.tables import auc_table
from core.store import open_store
from tests.test_import_dicom import dump
from tests.test_import_tables import cohort

PROTOCOLS = range(pickle.HIGHEST_PROTOCOL + 1)


@pytest.fixture()
def store(tmp_path):
    """Three exams (keys 0, 1, 2) with breasts and images, as in test_import_tables."""
    s = open_store(tmp_path / "s.duckdb")
    cohort(s)
    return s


# ---------------------------------------------------------------------------- payload builders
class Call:
    """Pickles as ``func(*args)``: how every gadget below is written, nested as needed."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args

    def __call__(self, *args):  # pickle wants a callable; never called here
        raise AssertionError


def global_call(module: str, name: str, arg: str, protocol: int) -> bytes:
    """``module.name(arg)`` with the global named by GLOBAL (protocols 0-3) or STACK_GLOBAL
    (4-5): the way to name a dotted attribute chain that `Call` cannot express."""
    text = arg.encode()
    if protocol >= 4:
        head = b"\x80" + bytes([protocol])
        for part in (module.encode(), name.encode()):
            head += b"\x8c" + bytes([len(part)]) + part
        return head + b"\x93" + b"X" + struct.pack("<I", len(text)) + text + b"\x85R."
    prefix = b"\x80" + bytes([protocol]) if protocol >= 2 else b""
    return (prefix + b"c" + module.encode() + b"\n" + name.encode() + b"\n(V" + text
            + b"\ntR.")


def touch(marker) -> str:
    return f"touch {marker}"


def payloads(marker, inner_path) -> dict[str, callable]:
    """name -> protocol -> pickle bytes; each would create ``marker`` if run."""
    import builtins
    import copyreg
    import os
    import subprocess as sp

    import pandas.io.pickle as pd_pickle

    command = touch(marker)
    python = f"__import__('os').system({command!r})"
    reduce_payloads = {
        "os.system": Call(os.system, command),
        "subprocess.Popen": Call(sp.Popen, ["touch", str(marker)]),
        "subprocess.check_call": Call(sp.check_call, ["touch", str(marker)]),
        "builtins.eval": Call(builtins.eval, python),
        "builtins.exec": Call(builtins.exec, python),
        "builtins.getattr": Call(Call(builtins.getattr, Call(builtins.__import__, "os"),
                                      "system"), command),
        "pickle.loads nested": Call(pickle.loads, pickle.dumps(Call(os.system, command))),
        "pandas.io.pickle.read_pickle": Call(pd_pickle.read_pickle, str(inner_path)),
        "copyreg._reconstructor Popen": Call(copyreg._reconstructor, sp.Popen, sp.Popen,
                                             ["touch", str(marker)]),
        # a plain-data list around the gadget: the container itself is allowed
        "list around os.system": [{"L-CC": ["0_L_CC"]}, Call(os.system, command)],
    }
    built = {name: (lambda p, obj=obj: pickle.dumps(obj, protocol=p))
             for name, obj in reduce_payloads.items()}
    for module, name in (("pandas._libs.lib", "np.testing._private.utils.os.system"),
                         ("numpy.testing._private.utils", "os.system"),
                         ("numpy", "testing._private.utils.os.system"),
                         ("pandas._libs.x", "os.system")):  # dotted name, unknown module
        built[f"{module}:{name}"] = (
            lambda p, module=module, name=name: global_call(module, name, command, max(p, 4)))
    built["INST opcode"] = lambda p: (b"(V" + command.encode() + b"\nios\nsystem\n.")
    built["OBJ opcode"] = lambda p: (b"(cos\nsystem\nV" + command.encode() + b"\no.")
    return built


def wait_for(marker, seconds=5.0) -> bool:
    """Popen returns before its child runs: wait for the reference run's marker."""
    end = time.monotonic() + seconds
    while time.monotonic() < end and not marker.exists():
        time.sleep(0.05)
    return marker.exists()


def runs_unrestricted(data: bytes, marker, tmp_path) -> bool:
    """Reference: plain `pickle.loads` in a child process creates the marker."""
    path = tmp_path / "reference.pkl"
    path.write_bytes(data)
    subprocess.run([sys.executable, "-c", "import pickle,sys; "
                    "pickle.loads(open(sys.argv[1],'rb').read())", str(path)],
                   capture_output=True, timeout=60)
    ran = wait_for(marker)
    marker.unlink(missing_ok=True)
    return ran


# ---------------------------------------------------------------------------- pickles
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_crafted_pickles_run_nothing(tmp_path, protocol):
    marker = tmp_path / "pwned"
    inner = tmp_path / "inner.pkl"
    inner.write_bytes(pickle.dumps(Call(__import__("os").system, touch(marker))))
    for name, build in payloads(marker, inner).items():
        data = build(protocol)
        if protocol == 0 and "._libs.x" not in name:  # slow: prove each payload live once
            assert runs_unrestricted(data, marker, tmp_path), f"{name}: payload is not live"
        (tmp_path / "data.pkl").write_bytes(data)
        for read in (load_plain_pickle, lambda p: read_manifest(p, tmp_path), read_table):
            with pytest.raises(InputError) as info:
                read(tmp_path / "data.pkl")
            assert "\n" not in str(info.value), name
    assert not wait_for(marker, 1.0)  # a Popen child would have created it by now


def test_dataframe_pickles_are_refused_with_the_way_out(store, tmp_path):
    """A pickled table fails with the conversion to do, and changes nothing."""
    pd.DataFrame({"exam": ["0", "1"], "score": [0.2, 0.8]}).to_pickle(tmp_path / "t.pkl")
    before = dump(store)
    with pytest.raises(InputError, match="to_parquet"):
        import_predictions(store, tmp_path / "t.pkl", model="m", level="exam")
    with pytest.raises(InputError, match=r"pd\.read_pickle\(path\)\.to_parquet"):
        read_table(tmp_path / "t.pkl")
    with pytest.raises(InputError, match="plain-data pickles"):
        read_manifest(tmp_path / "t.pkl", tmp_path)
    assert dump(store) == before


def _child_crashes(data: bytes, tmp_path, then: str = "") -> int:
    path = tmp_path / "crash.pkl"
    path.write_bytes(data)
    done = subprocess.run([sys.executable, "-c", "import pickle,sys; "
                           f"x = pickle.loads(open(sys.argv[1],'rb').read()); {then}",
                           str(path)], capture_output=True, timeout=120)
    return done.returncode


def test_exact_pairs_of_a_dataframe_pickle_still_crash_python(tmp_path):
    """Why DataFrame pickles are refused rather than allow-listed: two crafted files naming
    only pairs a real pandas/numpy pickle uses crash the interpreter (SIGSEGV); ILCscope
    refuses both with one line."""
    class DType:  # numpy.dtype('V8') whose state claims no object fields (flags 0)
        def __reduce__(self):
            return np.dtype, ("V8", False, True), (3, "|", None, ("a",),
                                                   {"a": (np.dtype("O"), 0)}, 8, 1, 0)
    scalar = np.dtype("i8").type(0).__reduce__()[0]  # numpy's own scalar reconstructor
    pointer = pickle.dumps(Call(scalar, DType(), b"\x41" * 8), protocol=4)
    assert _child_crashes(pointer, tmp_path, "print(repr(x))") < 0
    (tmp_path / "p.pkl").write_bytes(pointer)
    with pytest.raises(InputError, match="only plain numbers and text"):
        load_plain_pickle(tmp_path / "p.pkl")

    frame = pd.DataFrame({"exam": pd.array(["ab", "cd"], dtype="str")})
    data = pickle.dumps(frame, protocol=4)
    offsets = struct.pack("<3q", 0, 2, 4)  # large_string offsets (int64)
    assert data.count(offsets) == 1  # the arrow string offsets, patched past the buffer
    data = data.replace(offsets, struct.pack("<3q", 0, 2, 50_000_000))
    assert _child_crashes(data, tmp_path, "print(len(x['exam'].iloc[1]))") < 0
    (tmp_path / "t.pkl").write_bytes(data)
    for read in (load_plain_pickle, read_table):
        with pytest.raises(InputError):
            read(tmp_path / "t.pkl")


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_metarepository_exam_list_with_numpy_values(tmp_path, protocol):
    """data.pkl in the metarepository's shape, numpy scalars and arrays included, loads."""
    exams = [{"horizontal_flip": "NO", "L-CC": ["0_L_CC"], "R-CC": ["0_R_CC"],
              "L-MLO": ["0_L_MLO"], "R-MLO": ("0_R_MLO",),
              "cancer_label": {"benign": np.int64(0), "left_malignant": np.int64(0),
                               "right_malignant": np.int64(1), "unknown": np.bool_(False)},
              "best_center": {"L-CC": [(np.int64(1657), np.int32(1457))]},
              "window_location": {"R-CC": [np.arange(4)]}, "age": np.float32(52.5),
              "name": np.str_("x"), "raw": b"\x00\xff", "views": {"CC", "MLO"}}]
    (tmp_path / "data.pkl").write_bytes(pickle.dumps(exams, protocol=protocol))
    loaded = load_plain_pickle(tmp_path / "data.pkl")
    first = loaded[0]
    assert first["cancer_label"] == exams[0]["cancer_label"]
    assert type(first["cancer_label"]["right_malignant"]) is np.int64
    assert first["best_center"]["L-CC"][0] == (1657, 1457) and first["age"] == np.float32(52.5)
    assert first["name"] == "x" and first["raw"] == b"\x00\xff" and first["views"] == {"CC", "MLO"}
    assert isinstance(first["window_location"]["R-CC"][0], PickledArray)  # dropped, not decoded
    manifest = read_manifest(tmp_path / "data.pkl", tmp_path)
    breasts = manifest.breasts
    assert breasts[("0", "R")]["cancer"] == 1 and breasts[("0", "L")]["cancer"] == 0
    assert sorted(f[0] for f in manifest.files) == ["0_L_CC.png", "0_L_MLO.png", "0_R_CC.png",
                                                    "0_R_MLO.png"]


@pytest.mark.parametrize("exam, match", [
    ({"L-CC": "0_L_CC"}, "L-CC is not a list of file names"),
    ({"L-CC": [np.arange(3)]}, "L-CC is not a list of file names"),
    ({"cancer_label": [1]}, "cancer_label is a list"),
    ({"cancer_label": {"left_malignant": np.arange(2)}}, "is not 0/1"),
    ({"cancer_label": {"right_malignant": 0.5}}, "'0.5' is not 0/1"),
])
def test_metarepository_exam_list_wrong_shapes(tmp_path, exam, match):
    (tmp_path / "data.pkl").write_bytes(pickle.dumps([exam], protocol=4))
    with pytest.raises(InputError, match=match):
        read_manifest(tmp_path / "data.pkl", tmp_path)


# ---------------------------------------------------------------------------- CSV downloads
FORMULAS = ("=cmd|' /C calc'!A0", "@SUM(1+1)", "+1+cmd|' /C calc'!A0", "-2+3", "\t=1+2",
            "\r=1+2")


def spreadsheet_runs(cell: str) -> bool:
    """OWASP's rule, written independently: a cell a spreadsheet would evaluate."""
    if not cell or cell[0] not in "=+-@\t\r":
        return False
    try:
        float(cell)
        return False
    except ValueError:
        return True


def test_formula_names_are_defused_in_downloads(store, tmp_path, monkeypatch):
    """Model names from a user's table reach the benchmark CSV as text, never formulas."""
    import ui.downloads

    table = pd.DataFrame({"exam": ["0", "1", "2"]})
    for n, name in enumerate(FORMULAS):
        table[name] = [0.9 - n / 10, -0.5, 0.1]
    table.to_csv(tmp_path / "evil.csv", index=False)
    report = import_predictions(store, tmp_path / "evil.csv", level="exam")
    assert report.counts()["imported"] == 1
    scores = store.scores(models=list(FORMULAS), level="exam")
    frame = auc_table(scores)  # the benchmark page's table builder
    assert set(frame["model"]) == set(FORMULAS)
    frame["delta"] = -0.5
    frame["as_text"] = "-0.5"
    sent = {}
    monkeypatch.setattr(ui.downloads.st, "download_button",
                        lambda label, data, name, mime, **kw: sent.update(data=data, name=name))
    ui.downloads.table_download(frame, "benchmark", key="t")
    rows = list(csv.reader(io.StringIO(sent["data"], newline="")))
    cells = [c for row in rows for c in row]
    assert not [c for c in cells if spreadsheet_runs(c)]
    assert sorted(r[rows[0].index("model")] for r in rows[1:]) == sorted("'" + f for f in FORMULAS)
    assert {r[rows[0].index("delta")] for r in rows[1:]} == {"-0.5"}  # numbers stay numbers
    assert {r[rows[0].index("as_text")] for r in rows[1:]} == {"-0.5"}
    round_trip = pd.read_csv(io.StringIO(sent["data"]))
    assert round_trip["delta"].dtype == np.float64
    pd.testing.assert_series_equal(round_trip["auc"], frame["auc"].reset_index(drop=True))


def test_formula_headers_and_categories_are_defused():
    from ui.downloads import csv_text
    frame = pd.DataFrame({"=HYPERLINK(\"x\")": pd.Categorical(["@a", "b"]), "n": [-1, 2]})
    rows = list(csv.reader(io.StringIO(csv_text(frame), newline="")))
    assert rows == [["'=HYPERLINK(\"x\")", "n"], ["'@a", "-1"], ["b", "2"]]


# ---------------------------------------------------------------------------- column types
def _wide(tmp_path, column, name="t.parquet") -> str:
    pd.DataFrame({"exam": ["0", "1", "2"], "score": column}).to_parquet(tmp_path / name)
    return tmp_path / name


@pytest.mark.parametrize("column, match", [
    (pd.to_datetime(["2020-01-01", "2021-01-01", "2022-01-01"]), "'score' holds datetime"),
    (pd.to_datetime(["2020-01-01", "2021-01-01", None]).tz_localize("UTC"), "holds datetime"),
    (pd.to_timedelta([1, 2, 3], unit="s"), "'score' holds timedelta"),
    ([True, False, True], "'score' holds booleans"),
    ([date(2020, 1, 1), None, date(2020, 1, 3)], "'score' holds date values"),
    ([[0.1], [0.2], [0.3]], "holds ndarray values"),
    (pd.Categorical(pd.to_datetime(["2020-01-01"] * 3)), "holds datetime"),
])
def test_scores_of_the_wrong_type_are_refused(store, tmp_path, column, match):
    before = dump(store)
    with pytest.raises(InputError, match=match) as info:
        import_predictions(store, _wide(tmp_path, column), model="m", level="exam")
    assert "\n" not in str(info.value)
    assert dump(store) == before


def test_numbers_mixed_with_text_are_refused():
    """Parquet cannot mix them in one column, but two value columns concatenated can."""
    from core.importers.columns import parse_numbers
    with pytest.raises(InputError, match="'s' mixes numbers and text"):
        parse_numbers(pd.Series([0.5, "0.7", np.nan], dtype=object), "s", "f.parquet")
    with pytest.raises(InputError, match="'s' holds booleans"):
        parse_numbers(pd.Series([0.5, True, np.nan], dtype=object), "s", "f.parquet")
    assert parse_numbers(pd.Series(["0.5", "", None], dtype=object), "s", "f").iloc[0] == 0.5


def test_ids_of_the_wrong_type_are_refused(store, tmp_path):
    pd.DataFrame({"exam": [True, False], "score": [0.2, 0.3]}).to_parquet(tmp_path / "b.parquet")
    pd.DataFrame({"exam": pd.to_datetime(["2020-01-01", "2020-01-02"]),
                  "score": [0.2, 0.3]}).to_parquet(tmp_path / "d.parquet")
    for file, match in (("b.parquet", "'exam' holds booleans"),
                        ("d.parquet", "'exam' holds datetime")):
        with pytest.raises(InputError, match=match):
            import_predictions(store, tmp_path / file, model="m", level="exam")


def test_typed_columns_that_are_right_still_import(store, tmp_path):
    """Floats, ints, nullable ints and decimals are scores; a boolean reader column is recall."""
    from decimal import Decimal
    pd.DataFrame({"exam": [0, 1, 2], "a": [0.1, 0.9, 0.5], "b": pd.array([1, 2, None], "Int64"),
                  "c": [Decimal("0.25"), None, Decimal("0.75")]}).to_parquet(tmp_path / "s.parquet")
    report = import_predictions(store, tmp_path / "s.parquet", level="exam")
    assert report.counts()["imported"] == 1, report.outcomes[0].reason
    got = store.predictions(models=["a", "b", "c"], level="exam")
    assert len(got) == 3 + 2 + 2
    pd.DataFrame({"exam": ["0", "1", "2"], "r1": [True, False, True]}).to_parquet(
        tmp_path / "r.parquet")
    report = import_readers(store, tmp_path / "r.parquet", level="exam")
    assert report.counts()["imported"] == 1, report.outcomes[0].reason


def test_manifest_ages_of_the_wrong_type_are_refused(tmp_path):
    base = {"exam": ["e1", "e1"], "laterality": ["L", "R"], "cancer": [0, 1]}
    for ages, match in ((pd.to_datetime(["1970-01-01"] * 2), "'age' holds datetime"),
                        ([True, True], "'age' holds booleans")):
        pd.DataFrame(dict(base, age=ages)).to_parquet(tmp_path / "m.parquet")
        with pytest.raises(InputError, match=match):
            read_manifest(tmp_path / "m.parquet", tmp_path)
