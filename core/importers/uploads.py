"""Files uploaded through the browser: saved under the store's files folder, ZIPs unpacked safely,
then handed to the importer of their kind.

Pixels stay in files, so an upload must outlive the request: each batch gets its own folder
``<files>/uploads/<timestamp>/`` that becomes the imported dataset's root.
"""
from __future__ import annotations

import time
import zipfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from core.errors import InputError
from core.importers import KINDS
from core.validation import check_choice

# Limits for one browser upload (all its ZIPs together); each breach fails the whole upload
# with one line and leaves nothing behind. Sizes are checked from the member headers, then
# again while unpacking, since headers can lie.
# .streamlit/config.toml caps an uploaded file at 2 GiB; zipped mammograms shrink 1.5-3x, so
# 8 GiB unpacked holds any honest upload. Larger collections go through `python -m core import`.
MAX_UNPACKED_BYTES = 8 * 2**30
# 2 GiB holds ~100-1,000 mammograms (2-30 MB each); 10,000 members leaves room for small PNGs
# and thumbnails, while tens of thousands of (empty) members only tie up the server.
MAX_MEMBERS = 10_000
# Deflate reaches ~1,000:1 on repeated bytes (a 2 MB bomb -> 2 GiB); DICOMs with a black
# background and CSV tables stay under ~20:1. The ratio applies to members over 1 MiB: a
# small member cannot hurt, whatever its ratio.
MAX_RATIO = 100
RATIO_FLOOR_BYTES = 2**20
# A DICOM export nests patient/study/series/image, 4-6 folders; 32 is generous, and bounds
# the work (and the recursion in folder creation) a hostile member path can ask for.
MAX_DEPTH = 32
_CHUNK = 1 << 20


@dataclass(frozen=True)
class RoutedUpload:
    """What to import from an upload: the path the importer reads and its options."""

    path: Path      # the batch's folder (folder importers, several files) or its one file
    options: dict   # the caller's options, a bare manifest name resolved inside the folder


def route_upload(files: Iterable[tuple[str, bytes]], uploads_dir: Path, kind: str,
                 options: dict | None = None) -> RoutedUpload:
    """Save an upload (`save_uploads`) and say what importer ``kind`` reads from it.

    Folder importers (dicom, png, mias) read the batch's folder; file importers read the one
    file uploaded (or unpacked), else the folder. A PNG manifest named without a folder is the
    uploaded file of that name.
    """
    check_choice(kind, KINDS, name="kind")
    folder = save_uploads(files, uploads_dir)
    found = [p for p in folder.rglob("*") if p.is_file()]
    path = folder if KINDS[kind][2] == "folder" or len(found) != 1 else found[0]
    options = dict(options or {})
    manifest = options.get("manifest")
    if kind == "png" and manifest and "/" not in str(manifest):
        options["manifest"] = folder / manifest
    return RoutedUpload(path, options)


def save_uploads(files: Iterable[tuple[str, bytes]], uploads_dir: Path) -> Path:
    """Write ``(name, bytes)`` pairs into a new folder; ``.zip`` files are unpacked there.

    Names are reduced to their last component (``.``, ``..`` and empty names are refused);
    ZIP members with absolute paths or ``..`` are refused (zip slip), as are uploads past the
    limits above (`MAX_UNPACKED_BYTES`, `MAX_MEMBERS`, `MAX_RATIO`, `MAX_DEPTH`).
    """
    target = uploads_dir / time.strftime("%Y%m%d-%H%M%S")
    suffix = 0
    while target.exists():
        suffix += 1
        target = uploads_dir / f"{time.strftime('%Y%m%d-%H%M%S')}-{suffix}"
    target.mkdir(parents=True)
    try:
        _write_all(files, target)
    except BaseException:
        import shutil

        shutil.rmtree(target, ignore_errors=True)  # a refused batch leaves nothing behind
        raise
    return target


def _write_all(files: Iterable[tuple[str, bytes]], target: Path) -> None:
    budget = _Budget(MAX_UNPACKED_BYTES, MAX_MEMBERS)
    for name, data in files:
        name = PurePosixPath(str(name).replace("\\", "/")).name
        if name in ("", ".", "..") or "\x00" in name:
            raise InputError(f"an uploaded file is named {name!r}; upload files with ordinary "
                             "names")
        path = target / name
        path.write_bytes(data)
        if name.lower().endswith(".zip"):
            _unzip(path, target, budget)
            path.unlink()


@dataclass
class _Budget:
    """What is left of the upload's limits, shared by all its ZIPs."""

    bytes_left: int
    members_left: int


def _unzip(archive: Path, target: Path, budget: _Budget) -> None:
    """Unpack ``archive`` into ``target`` within ``budget`` (checked first from the headers)."""
    try:
        with zipfile.ZipFile(archive) as zf:
            budget.members_left -= len(zf.infolist())  # folders count: each is work too
            if budget.members_left < 0:
                raise InputError(f"{archive.name}: over {MAX_MEMBERS} files in this upload; "
                                 "upload fewer, or import the folder with python -m core import")
            members = [m for m in zf.infolist() if not _skipped(m)]
            for m in members:
                _check_member(archive.name, m)
            declared = sum(m.file_size for m in members)
            if declared > budget.bytes_left:
                raise InputError(f"{archive.name}: unpacks to {declared / 2**30:.1f} GiB, over "
                                 f"the {MAX_UNPACKED_BYTES / 2**30:.0f} GiB an upload may hold; "
                                 "import large collections with python -m core import")
            for m in members:
                _extract(zf, m, target, archive.name, budget)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
        raise InputError(f"{archive.name}: not a readable ZIP file ({type(exc).__name__}); "
                         "it is damaged or uses an unsupported compression") from None
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise InputError(f"{archive.name}: cannot unpack it ({reason})") from None


def _skipped(m: zipfile.ZipInfo) -> bool:
    """Folders (made as needed) and macOS resource forks (not images)."""
    return m.is_dir() or "__MACOSX" in PurePosixPath(m.filename).parts


def _check_member(archive: str, m: zipfile.ZipInfo) -> None:
    rel = PurePosixPath(m.filename)
    if rel.is_absolute() or ".." in rel.parts or "\x00" in m.filename:
        raise InputError(f"{archive}: member {m.filename[:80]!r} points outside the archive; "
                         "refusing to unpack it")
    if len(rel.parts) - 1 > MAX_DEPTH:
        raise InputError(f"{archive}: a member is {len(rel.parts) - 1} folders deep, over "
                         f"{MAX_DEPTH}; zip the files with a flatter layout")
    if m.flag_bits & 0x1:
        raise InputError(f"{archive}: encrypted members cannot be unpacked; zip them without "
                         "a password")
    if m.file_size > RATIO_FLOOR_BYTES and m.file_size > MAX_RATIO * max(m.compress_size, 1):
        raise InputError(f"{archive}: a member compresses {m.file_size // max(m.compress_size, 1)}"
                         f":1, over {MAX_RATIO}:1 (a zip bomb?); zip real image files")


def _extract(zf: zipfile.ZipFile, m: zipfile.ZipInfo, target: Path, archive: str,
             budget: _Budget) -> None:
    """Copy one member, counting bytes as they come: never more than its header declared
    (which the ratio and size checks saw) nor than what is left of the upload's budget."""
    path = target.joinpath(*(p for p in PurePosixPath(m.filename).parts if p != "."))
    path.parent.mkdir(parents=True, exist_ok=True)
    limit, written = min(m.file_size, budget.bytes_left), 0
    with zf.open(m) as source, open(path, "wb") as out:
        while chunk := source.read(_CHUNK):
            written += len(chunk)
            if written > limit:
                raise InputError(f"{archive}: a member unpacks past the size its header "
                                 "declares; the archive is damaged or hostile")
            out.write(chunk)
    budget.bytes_left -= written
