"""Hostile files fail alone, with one line, and cheaply; the good files beside them are stored.

Each hostile file is built here byte by byte (nested undefined-length sequences, a deflated
dataset that inflates to hundreds of MB, PNG headers declaring huge images, names that are not
UTF-8) and imported from a folder beside good files. Memory is measured in a subprocess
(``ru_maxrss``), against the same process importing a good file first. Also: no header value
in errors, impossible ages not stored, palette PNGs as grey values, never indices.
"""
from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zlib
from io import BytesIO
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cli import main
from core.importers.dicom import import_dicom
from core.importers.png import import_png
from core.io.images import read_pixels
from core.store import open_store
from tests.test_import_dicom import make_dicom
from tests.test_import_png import write_png

PHI_ID = "MRN55501234"
_PIXEL_TAG = b"\xe0\x7f\x10\x00OW\x00\x00"  # (7FE0,0010) OW, explicit VR little endian


# ---------------------------------------------------------------------------- builders
def nested_dicom(path: Path, depth: int) -> None:
    """A small DICOM whose ReferencedImageSequence nests ``depth`` undefined-length sequences."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    make_dicom(path, study="1.2.3.77", extra={"ReferencedImageSequence": Sequence([Dataset()])})
    seq, item = b"\x08\x00\x40\x11SQ\x00\x00\xff\xff\xff\xff", b"\xfe\xff\x00\xe0\xff\xff\xff\xff"
    ends = b"\xfe\xff\x0d\xe0\x00\x00\x00\x00" + b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
    written = b"\x08\x00\x40\x11SQ\x00\x00" + struct.pack("<I", 8) + b"\xfe\xff\x00\xe0" + bytes(4)
    data = path.read_bytes()
    assert data.count(written) == 1
    path.write_bytes(data.replace(written, (seq + item) * depth + ends * depth))


def deflated_dicom(path: Path, *, rows: int, cols: int, pixel_bytes: int) -> None:
    """Deflated Explicit VR Little Endian declaring ``rows x cols`` with ``pixel_bytes`` zeros,
    compressed as a stream (a few hundred KB on disk, never whole in memory here)."""
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    make_dicom(path, pixels=np.zeros((8, 8), np.uint16), study="1.2.3.78")
    import pydicom

    ds = pydicom.dcmread(path)
    del ds.PixelData
    ds.Rows, ds.Columns = rows, cols
    def meta_end(data: bytes) -> int:  # preamble, 'DICM', (0002,0000) UL, the group it counts
        return 132 + 12 + struct.unpack("<I", data[140:144])[0]

    body = BytesIO()
    ds.save_as(body, enforce_file_format=True)
    dataset = body.getvalue()[meta_end(body.getvalue()):]
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    head = BytesIO()
    ds.save_as(head, enforce_file_format=True)
    meta = head.getvalue()[:meta_end(head.getvalue())]
    deflate = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    with open(path, "wb") as f:
        f.write(meta + deflate.compress(dataset + _PIXEL_TAG + struct.pack("<I", pixel_bytes)))
        zeros = bytes(16 << 20)
        for start in range(0, pixel_bytes, len(zeros)):
            f.write(deflate.compress(zeros[: min(len(zeros), pixel_bytes - start)]))
        f.write(deflate.flush())


def png_bomb(path: Path, *, width: int, height: int, bits: int = 8) -> None:
    """A greyscale PNG declaring ``width x height`` of zeros, its IDAT streamed (small file)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data))

    deflate = zlib.compressobj(9)
    row = bytes(1 + width * bits // 8)  # filter byte + samples
    idat = b"".join(deflate.compress(row * 256) for _ in range(height // 256))
    idat += deflate.compress(row * (height % 256)) + deflate.flush()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n"
                     + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, bits, 0, 0, 0, 0))
                     + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def bytes_name(folder: Path, name: bytes) -> bytes:
    """A path under ``folder`` whose last component is the raw bytes ``name`` (Linux only)."""
    return os.path.join(os.fsencode(folder), name)


def _outcomes(report) -> dict:
    return {o.file: o for o in report.outcomes}


def _assert_one_failure(report, good: list[str], match: str) -> None:
    failed = [o for o in report.outcomes if o.status == "failed"]
    assert len(failed) == 1, report.outcomes
    assert match in failed[0].reason and "\n" not in failed[0].reason
    outcome = _outcomes(report)
    assert all(outcome[g].status == "imported" for g in good)


# ---------------------------------------------------------------------------- DICOM
@pytest.mark.parametrize("hostile, match", [
    ("nested", "nests sequences too deeply"),
    ("deflate bomb", "inflates past"),
    ("deflated, huge declared size", "over the 128 MiB"),
    ("name", "not valid UTF-8"),
    ("folder name", "not valid UTF-8"),
])
def test_a_hostile_dicom_fails_alone(tmp_path, hostile, match):
    root = tmp_path / "d"
    make_dicom(root / "good.dcm")
    make_dicom(root / "sub" / "good2.dcm", laterality="R")
    if hostile == "nested":
        nested_dicom(root / "bad.dcm", 3000)
    elif hostile == "deflate bomb":
        deflated_dicom(root / "bad.dcm", rows=20000, cols=20000, pixel_bytes=256 << 20)
    elif hostile == "deflated, huge declared size":
        deflated_dicom(root / "bad.dcm", rows=20000, cols=20000, pixel_bytes=64)
    else:
        make_dicom(root / "tmp.dcm", study="1.2.3.79")
        folder = root / "x" if hostile == "folder name" else root
        if hostile == "folder name":
            os.mkdir(bytes_name(root, b"bad\xff"))
            folder = Path(os.fsdecode(bytes_name(root, b"bad\xff")))
        os.rename(root / "tmp.dcm", bytes_name(folder, b"scan\xfe.dcm"))
    store = open_store(tmp_path / "s.duckdb")
    report = import_dicom(store, root, dataset="hostile")
    _assert_one_failure(report, ["good.dcm", "sub/good2.dcm"], match)
    assert sorted(store.images(dataset="hostile")["path"]) == ["good.dcm", "sub/good2.dcm"]
    json.dumps(report.as_dict(), ensure_ascii=False).encode("utf-8")  # printable as UTF-8


def test_a_deflated_mammogram_still_imports(tmp_path):
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    import pydicom

    pixels = make_dicom(tmp_path / "d" / "a.dcm")
    ds = pydicom.dcmread(tmp_path / "d" / "a.dcm")
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ds.save_as(tmp_path / "d" / "a.dcm", enforce_file_format=True)
    store = open_store(tmp_path / "s.duckdb")
    assert import_dicom(store, tmp_path / "d").counts()["imported"] == 1
    np.testing.assert_array_equal(read_pixels(tmp_path / "d" / "a.dcm"), pixels)


def test_a_folder_whose_own_name_is_not_utf8_is_refused_before_anything(tmp_path):
    root = Path(os.fsdecode(bytes_name(tmp_path, b"scans\xff")))
    make_dicom(root / "a.dcm")
    store = open_store(tmp_path / "s.duckdb")
    assert main(["import", "dicom", str(root), "--db", str(tmp_path / "s.duckdb"),
                 "--dataset", "site"]) == 2
    assert store.counts()["images"] == 0


_MEMORY_SCRIPT = """
import resource, sys
from core.importers.dicom import import_dicom
from core.importers.png import import_png
from core.store import open_store
store = open_store(sys.argv[1])
import_dicom(store, sys.argv[2], dataset="warm")
import_png(store, sys.argv[4], sys.argv[5], dataset="warmpng")
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
dicom = import_dicom(store, sys.argv[3], dataset="bomb")
png = import_png(store, sys.argv[6], sys.argv[5], dataset="pngbomb")
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(before, after, dicom.counts()["failed"], png.counts()["failed"])
"""


def test_bombs_are_refused_before_memory_is_spent(tmp_path):
    """A deflated DICOM inflating to 256 MiB and a 16-bit PNG declaring 11,000 x 11,000
    (242 MB decoded, under Pillow's own bomb limit) raise peak memory by under 64 MB; decoding
    either would add hundreds of MB."""
    make_dicom(tmp_path / "warm" / "a.dcm")
    deflated_dicom(tmp_path / "bomb" / "b.dcm", rows=20000, cols=20000, pixel_bytes=256 << 20)
    make_dicom(tmp_path / "bomb" / "ok.dcm", study="1.2.3.80")
    write_png(tmp_path / "warmpng" / "0_L_CC.png")
    png_bomb(tmp_path / "pngbomb" / "0_L_CC.png", width=11000, height=11000, bits=16)
    write_png(tmp_path / "pngbomb" / "0_R_CC.png")
    pd.DataFrame({"exam": [0, 0], "laterality": ["L", "R"]}).to_csv(tmp_path / "m.csv",
                                                                     index=False)
    out = subprocess.run(
        [sys.executable, "-c", _MEMORY_SCRIPT, str(tmp_path / "s.duckdb"), str(tmp_path / "warm"),
         str(tmp_path / "bomb"), str(tmp_path / "warmpng"), str(tmp_path / "m.csv"),
         str(tmp_path / "pngbomb")],
        capture_output=True, text=True, check=True, cwd=Path(__file__).parents[1], timeout=300)
    before, after, dicom_failed, png_failed = map(int, out.stdout.split())
    print(f"peak memory {before >> 10} MB before the bombs, {after >> 10} MB after")
    assert (dicom_failed, png_failed) == (1, 1)
    assert (after - before) * 1024 < 64 * 2**20, f"peak memory grew {(after - before) >> 10} MB"
    assert "Traceback" not in out.stderr and "Warning" not in out.stderr


# ---------------------------------------------------------------------------- PNG
@pytest.fixture()
def png_folder(tmp_path):
    root = tmp_path / "p"
    write_png(root / "0_L_CC.png", seed=1)
    write_png(root / "0_R_CC.png", seed=2)
    manifest = tmp_path / "labels.csv"
    pd.DataFrame({"exam": [0, 0, 1, 1], "laterality": ["L", "R", "L", "R"]}).to_csv(
        manifest, index=False)
    return root, manifest


@pytest.mark.parametrize("hostile, match", [
    ("14000 x 14000", "too large to decode"),        # Pillow's own bomb error, in our words
    ("11000 x 11000 x 16 bit", "over the 128 MiB"),  # under Pillow's limit: ours refuses it
    ("name", "not valid UTF-8"),
    ("folder name", "not valid UTF-8"),
])
def test_a_hostile_png_fails_alone(png_folder, tmp_path, hostile, match):
    root, manifest = png_folder
    if hostile == "14000 x 14000":
        png_bomb(root / "1_L_CC.png", width=14000, height=14000)
    elif hostile.startswith("11000"):
        png_bomb(root / "1_L_CC.png", width=11000, height=11000, bits=16)
    elif hostile == "name":
        write_png(Path(os.fsdecode(bytes_name(root, b"1_L_CC\xff.png"))))
    else:
        os.mkdir(bytes_name(root, b"sub\xff"))
        write_png(Path(os.fsdecode(bytes_name(root, b"sub\xff"))) / "1_L_CC.png")
    store = open_store(tmp_path / "s.duckdb")
    report = import_png(store, root, manifest)
    _assert_one_failure(report, ["0_L_CC.png", "0_R_CC.png"], match)
    assert sorted(store.images()["image_key"]) == ["0_L_CC", "0_R_CC"]


def test_png_modes(tmp_path):
    """Grey palette -> its grey values (never the indices); colour palette and RGB refused;
    LA -> the grey plane; 16-bit grey exact."""
    rng = np.random.default_rng(3)
    grey = rng.integers(0, 256, (40, 32)).astype(np.uint8)
    # A palette whose index i holds grey 255 - i: indices and grey values differ everywhere.
    indices = (255 - grey).astype(np.uint8)
    palette_image = Image.fromarray(indices, mode="P")
    palette_image.putpalette([v for i in range(256) for v in (255 - i,) * 3])
    palette_image.save(tmp_path / "grey_palette.png")
    colour = Image.fromarray(indices, mode="P")
    colour.putpalette([v for i in range(256) for v in (i, 0, 255 - i)])
    colour.save(tmp_path / "colour_palette.png")
    alpha = np.stack([grey, np.full_like(grey, 255)], axis=-1)
    Image.fromarray(alpha, mode="LA").save(tmp_path / "la.png")
    Image.fromarray(np.stack([grey] * 3, axis=-1)).save(tmp_path / "rgb.png")
    sixteen = rng.integers(0, 65536, (40, 32)).astype(np.uint16)
    Image.fromarray(sixteen).save(tmp_path / "g16.png")

    np.testing.assert_array_equal(read_pixels(tmp_path / "grey_palette.png"), grey)
    np.testing.assert_array_equal(read_pixels(tmp_path / "la.png"), grey)
    got16 = read_pixels(tmp_path / "g16.png")
    assert got16.dtype == np.uint16
    np.testing.assert_array_equal(got16, sixteen)
    from core.errors import InputError

    with pytest.raises(InputError, match="colour palette image"):
        read_pixels(tmp_path / "colour_palette.png")
    with pytest.raises(InputError, match=r"colour image \(mode RGB\)"):
        read_pixels(tmp_path / "rgb.png")


# ---------------------------------------------------------------------------- PHI and ages
def _all_bytes(tmp_path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in tmp_path.rglob("*")
                    if p.is_file() and p.suffix != ".dcm")


def test_a_header_value_is_never_echoed_in_an_error(tmp_path, capsys):
    root = tmp_path / "d"
    make_dicom(root / "good.dcm")
    make_dicom(root / "bad.dcm", study="1.2.3.81", photometric=PHI_ID,
               extra={"PatientID": "OTHER-ID-1"})
    make_dicom(root / "rgb.dcm", study="1.2.3.82", photometric="RGB")
    db = tmp_path / "s.duckdb"
    assert main(["import", "dicom", str(root), "--db", str(db), "--json"]) == 1
    out, err = capsys.readouterr()
    files = {f["file"]: f for f in json.loads(out)["files"]}
    assert files["bad.dcm"]["status"] == "failed"
    assert "photometric interpretation unsupported (not a DICOM term)" in \
        files["bad.dcm"]["reason"]
    assert "photometric interpretation RGB" in files["rgb.dcm"]["reason"]  # a defined term
    assert files["good.dcm"]["status"] == "imported"
    open_store(db).checkpoint()
    for where, blob in (("stdout", out.encode()), ("stderr", err.encode()),
                        ("store and its files", _all_bytes(tmp_path))):
        assert PHI_ID.encode() not in blob, where


def test_a_manufacturer_repeating_the_patient_id_is_stored_redacted(tmp_path):
    make_dicom(tmp_path / "d" / "a.dcm", extra={"PatientID": PHI_ID,
                                                 "Manufacturer": f"ACME {PHI_ID}"})
    store = open_store(tmp_path / "s.duckdb")
    import_dicom(store, tmp_path / "d")
    assert store.images()["manufacturer"].tolist() == ["ACME <redacted>"]
    store.checkpoint()
    assert PHI_ID.encode() not in _all_bytes(tmp_path)


@pytest.mark.parametrize("age, stored", [
    ("999Y", None), ("131Y", None), ("130Y", 130.0), ("200M", 16.0), ("000D", 0.0),
    ("999D", 2.0), ("999W", 19.0), ("999M", 83.0)])
def test_impossible_ages_are_not_stored(tmp_path, capsys, age, stored):
    """0-130 years, as the PNG manifest; outside it the age is NULL and the report says so."""
    make_dicom(tmp_path / "d" / "a.dcm", extra={"PatientAge": age})
    db = tmp_path / "s.duckdb"
    assert main(["import", "dicom", str(tmp_path / "d"), "--db", str(db), "--json"]) == 0
    (outcome,) = json.loads(capsys.readouterr().out)["files"]
    value = open_store(db).exams()["age"].iloc[0]
    if stored is None:
        assert np.isnan(value) and "age not stored" in outcome["reason"]
        assert age[:3] not in outcome["reason"]  # the value itself is not quoted
    else:
        assert value == stored and outcome["reason"] == ""


def test_an_impossible_birth_date_gives_no_age(tmp_path):
    make_dicom(tmp_path / "d" / "a.dcm", extra={"PatientBirthDate": "17500101",
                                                 "StudyDate": "20200101"})
    store = open_store(tmp_path / "s.duckdb")
    report = import_dicom(store, tmp_path / "d")
    assert np.isnan(store.exams()["age"].iloc[0])
    assert "age not stored" in report.outcomes[0].reason


@pytest.mark.parametrize("error", [RecursionError, MemoryError])
def test_a_parser_exhausted_by_one_file_fails_that_file_only(tmp_path, error):
    """The last resort behind the checks above: whatever a decoder runs out of, the batch
    goes on."""
    from core.importers import ImportReport
    from core.importers.common import Batch, Skipped

    def exhausted():
        raise error()

    report = ImportReport(kind="dicom", dataset="d")
    with Batch(open_store(tmp_path / "s.duckdb"), report) as batch:
        batch.run("bad.dcm", exhausted)
        batch.run("next.dcm", lambda: Skipped("unchanged"))
    assert [(o.file, o.status) for o in report.outcomes] == [("bad.dcm", "failed"),
                                                             ("next.dcm", "skipped")]
    assert error.__name__ in report.outcomes[0].reason
