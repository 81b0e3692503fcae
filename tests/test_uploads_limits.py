"""Browser uploads within stated limits: zip bombs (ratio, total size, lying headers), too many
members, paths too deep, uploads named '..', '.' or nothing. Each fails with one line and
leaves nothing behind; honest uploads just under the limits unpack."""
from __future__ import annotations

import io
import struct
import zipfile

import pytest

from core.errors import InputError
from core.importers import uploads
from core.importers.uploads import save_uploads


def _zip(members: dict[str, bytes], *, compression=zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def _refused(tmp_path, files, match: str) -> None:
    uploads_dir = tmp_path / "uploads"
    uploads_dir.mkdir(exist_ok=True)
    with pytest.raises(InputError, match=match) as caught:
        save_uploads(files, uploads_dir)
    assert "\n" not in str(caught.value)
    assert list(uploads_dir.iterdir()) == []  # nothing left behind


def test_a_zip_bomb_is_refused_by_its_ratio(tmp_path):
    bomb = _zip({"scan.dcm": bytes(200 * 2**20)})  # 200 MiB of zeros in ~200 KB: 1,000:1
    assert len(bomb) < 2**20
    _refused(tmp_path, [("bomb.zip", bomb)], r"compresses \d+:1, over 100:1")


def test_the_total_unpacked_size_is_bounded_across_the_upload(tmp_path, monkeypatch):
    monkeypatch.setattr(uploads, "MAX_UNPACKED_BYTES", 3 * 2**20)
    honest = _zip({"a.png": bytes(range(256)) * 4096}, compression=zipfile.ZIP_STORED)  # 1 MiB
    assert save_uploads([("one.zip", honest)], tmp_path).is_dir()
    _refused(tmp_path, [(f"{k}.zip", honest) for k in range(4)], "an upload may hold")


def test_a_lying_size_header_is_caught_while_unpacking(tmp_path):
    """The header says 10 bytes, the data inflates to 5 MiB: the size and ratio checks see
    10 bytes, so only the count while streaming (or the CRC) can catch it."""
    data = bytes(5 * 2**20)
    blob = bytearray(_zip({"scan.dcm": data}))
    for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):  # local, central
        at = blob.index(signature) + offset
        assert struct.unpack("<I", blob[at:at + 4])[0] == len(data)
        blob[at:at + 4] = struct.pack("<I", 10)
    _refused(tmp_path, [("liar.zip", bytes(blob))], "damaged|hostile")


def test_too_many_members_are_refused(tmp_path):
    empty = _zip({f"f{k}.txt": b"" for k in range(20_000)})
    _refused(tmp_path, [("many.zip", empty)], "over 10000 files")
    half = _zip({f"f{k}.txt": b"" for k in range(6_000)})  # the count spans the upload's zips
    _refused(tmp_path, [("a.zip", half), ("b.zip", half)], "over 10000 files")
    assert len(list(save_uploads([("a.zip", half)], tmp_path).iterdir())) == 6_000


@pytest.mark.parametrize("depth", [3_000, 33])
def test_a_member_path_too_deep_is_refused(tmp_path, depth):
    _refused(tmp_path, [("deep.zip", _zip({"d/" * depth + "x.dcm": b"x"}))],
             f"{depth} folders deep, over 32")


def test_a_member_path_32_folders_deep_unpacks(tmp_path):
    folder = save_uploads([("deep.zip", _zip({"d/" * 32 + "x.dcm": b"x"}))], tmp_path)
    assert (folder.joinpath(*["d"] * 32) / "x.dcm").read_bytes() == b"x"


@pytest.mark.parametrize("name", ["..", ".", "", "a/..", "x\x00.dcm"])
def test_an_upload_with_no_usable_name_is_refused(tmp_path, name):
    _refused(tmp_path, [("good.dcm", b"x"), (name, b"data")], "upload files with ordinary names")


def test_an_encrypted_or_broken_zip_fails_with_one_line(tmp_path):
    blob = bytearray(_zip({"a.dcm": b"x" * 100}))
    at = blob.index(b"PK\x01\x02") + 8  # central directory: general purpose flags
    blob[at] |= 1
    _refused(tmp_path, [("locked.zip", bytes(blob))], "encrypted")
    _refused(tmp_path, [("broken.zip", b"PK\x03\x04 not really")], "not a readable ZIP")
