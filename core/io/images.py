"""Read any stored image by what its bytes say it is: PNG, PGM or DICOM.

Everything returns 2-D arrays with row 0 at the top and *brighter = denser* (MONOCHROME1 is
inverted on read), so filters, density and models never care where a file came from.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from core.errors import InputError
from core.io.dicom import dicom_display_source, dicom_pixels
from core.io.pixels import PNG_MAGIC, pgm_window, read_raster

__all__ = ["read_display_source", "read_pixels", "sniff_format"]


def sniff_format(path: Path) -> str:
    """'png', 'pgm' or 'dicom' from the file's first bytes (never from the name alone)."""
    with open(path, "rb") as f:
        head = f.read(132)
    if head.startswith(PNG_MAGIC):
        return "png"
    if head[:2] in (b"P5", b"P2") and len(head) > 2 and head[2:3].isspace():
        return "pgm"
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "dicom"
    raise InputError(f"{path.name}: not a PNG, PGM or DICOM file (magic bytes {head[:8]!r})")


def read_pixels(path: str | Path) -> np.ndarray:
    """The image as a 2-D integer array (uint8 or uint16), brighter = denser."""
    path = _existing(path)
    if sniff_format(path) == "dicom":
        return dicom_pixels(path)
    return read_raster(path)


def read_display_source(path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """`read_pixels` and the display window the file carries, or None: a DICOM's own
    (`core.io.dicom.display_window`), a pulled copy's (`core.io.pixels.pgm_window`)."""
    path = _existing(path)
    kind = sniff_format(path)
    if kind == "dicom":
        return dicom_display_source(path)
    return read_raster(path), (pgm_window(path) if kind == "pgm" else None)


def _existing(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"image file {path} does not exist")
    return path
