"""Files uploaded through the browser: saved under the store's files folder, ZIPs unpacked safely,
then handed to the importer of their kind.

Pixels stay in files, so an upload must outlive the request: each batch gets its own folder
``<files>/uploads/<timestamp>/`` that becomes the imported dataset's root.
"""
from __future__ import annotations

import time
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from core.errors import InputError
from core.importers import KINDS
from core.validation import check_choice

MAX_UNPACKED_BYTES = 50 * 2**30  # a zip bomb stops here


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

    Names are reduced to their last component; ZIP members with absolute paths or ``..``
    are refused (zip slip), as are archives that unpack past ``MAX_UNPACKED_BYTES``.
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
    for name, data in files:
        name = PurePosixPath(name.replace("\\", "/")).name
        if not name:
            raise InputError("an uploaded file has no name")
        path = target / name
        path.write_bytes(data)
        if name.lower().endswith(".zip"):
            _unzip(path, target)
            path.unlink()


def _unzip(archive: Path, target: Path) -> None:
    try:
        with zipfile.ZipFile(archive) as zf:
            members = [m for m in zf.infolist() if not m.is_dir()]
            total = sum(m.file_size for m in members)
            if total > MAX_UNPACKED_BYTES:
                raise InputError(f"{archive.name}: unpacks to {total / 2**30:.1f} GiB, over the "
                                 f"{MAX_UNPACKED_BYTES / 2**30:.0f} GiB limit")
            for m in members:
                rel = PurePosixPath(m.filename)
                if rel.is_absolute() or ".." in rel.parts:
                    raise InputError(f"{archive.name}: member {m.filename!r} points outside the "
                                     "archive; refusing to unpack it")
            for m in members:
                if PurePosixPath(m.filename).name.startswith("__MACOSX") or \
                        "__MACOSX" in PurePosixPath(m.filename).parts:
                    continue
                zf.extract(m, target)
    except zipfile.BadZipFile as exc:
        raise InputError(f"{archive.name}: not a readable ZIP file ({exc})") from exc
