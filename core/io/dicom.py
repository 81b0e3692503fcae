"""Reading DICOM files: headers and pixels, quietly, with errors in our own words.

Decoding lives here (below the importers) so that `core.io.images.read_pixels` can read any
stored image without importing an importer. Nothing here stores anything; what the DICOM
importer keeps is decided in `core.importers.dicom`.

`dicom_pixels` returns the stored values (uint8/uint16), MONOCHROME1 inverted so that brighter
= denser everywhere; pydicom's warnings and log lines (which can quote header values) never
reach stderr, and no error quotes a header value (only our own words, or a DICOM defined term
checked against its list).

Hostile files fail alone and cheaply: the file's size (inflated size, for the deflated transfer
syntax) is bounded before pydicom reads it, the declared pixel size before anything is decoded
(`core.io.pixels.MAX_PIXEL_BYTES`), and a header nested too deeply for the parser fails as
one `InputError`.
"""
from __future__ import annotations

import contextlib
import io
import logging
import re
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np

from core.errors import InputError
from core.io.pixels import MAX_PIXEL_BYTES, check_dimensions

# A DICOM file's bytes beyond its pixels: a few KB of header in practice, a few MB with vendor
# private data and icon images; 64 MiB is generous. pydicom holds a whole file (inflated, for
# the deflated transfer syntax) in memory, so larger files are refused before it reads them.
MAX_FILE_BYTES = MAX_PIXEL_BYTES + 64 * 2**20
_DEFLATED = "1.2.840.10008.1.2.1.99"
# Photometric interpretations defined by DICOM (PS3.3 C.7.6.3.1.2): an error may name one of
# these, never any other header text (a hostile file can put a patient's name there).
_PHOTOMETRIC_TERMS = ("MONOCHROME1", "MONOCHROME2", "RGB", "PALETTE COLOR", "YBR_FULL",
                      "YBR_FULL_422", "YBR_PARTIAL_422", "YBR_PARTIAL_420", "YBR_ICT", "YBR_RCT",
                      "HSV", "ARGB", "CMYK", "XYB")

# Header fields that identify a person or a place; never stored, scrubbed from messages.
PHI_KEYWORDS = (
    "PatientName", "PatientID", "OtherPatientIDs", "OtherPatientNames", "PatientBirthDate",
    "PatientBirthName", "PatientMotherBirthName", "PatientAddress", "PatientTelephoneNumbers",
    "AccessionNumber", "InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName",
    "ReferringPhysicianName", "ReferringPhysicianAddress", "PerformingPhysicianName",
    "NameOfPhysiciansReadingStudy", "OperatorsName", "PhysiciansOfRecord", "RequestingPhysician",
    "StationName", "DeviceSerialNumber", "StudyID", "StudyInstanceUID", "SeriesInstanceUID",
    "SOPInstanceUID", "FrameOfReferenceUID", "MedicalRecordLocator", "IssuerOfPatientID",
    "StudyDescription", "SeriesDescription", "PatientComments", "AdditionalPatientHistory",
)


# ---------------------------------------------------------------------------- reading
class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def _quiet():
    """Keep pydicom's warnings and log lines (which can quote header values) off stderr.

    Yields the list of pydicom's log messages, so a caller can act on them (truncation is
    only logged: "End of file reached before delimiter").
    """
    logger = logging.getLogger("pydicom")
    handler, propagate = _Collect(), logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield handler.messages
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


def read_dataset(path: Path | bytes, name: str, *, pixels: bool = True):
    """A DICOM file's dataset (with pixel data when ``pixels``), quietly; errors as `InputError`.

    ``path`` may be the file's bytes, already in memory (a PACS instance: its identifying
    header then never touches the disk). With ``pixels``, the header is read first and its
    declared pixel size checked (`check_pixel_budget`), so pixel data a mammogram cannot have
    is never read.
    """
    with _binary(path) as f:
        head = f.read(132)
        size = f.seek(0, io.SEEK_END)
    if len(head) < 132 or head[128:132] != b"DICM":
        raise InputError(f"{name}: not a DICOM file (no 'DICM' marker at byte 128 of its "
                         f"{size} bytes); pass DICOM Part 10 files")
    if size > MAX_FILE_BYTES:
        raise InputError(f"{name}: {size / 2**20:.0f} MiB, over the {MAX_FILE_BYTES // 2**20} "
                         "MiB a mammogram needs; the file is corrupt or not a mammogram")
    ds = _dcmread(path, name, stop_before_pixels=True)
    if not pixels:
        return ds
    if "Rows" in ds and "Columns" in ds:  # without them, `stored_pixels` says what is missing
        with header_errors(name):
            check_pixel_budget(ds, name)
    return _dcmread(path, name, stop_before_pixels=False)


def _binary(path: Path | bytes):
    """A binary file over a path, or over a file's bytes in memory."""
    return open(path, "rb") if isinstance(path, (str, Path)) else io.BytesIO(path)


def _file_meta(path: Path | bytes):
    """The file meta group, read before the dataset (a deflated one must be sized first).
    pydicom's `read_file_meta_info` opens paths only; in memory, its own two steps."""
    from pydicom.filereader import _read_file_meta_info, read_file_meta_info, read_preamble

    if isinstance(path, (str, Path)):
        return read_file_meta_info(path)
    with _binary(path) as fp:
        read_preamble(fp, False)
        return _read_file_meta_info(fp)


def _dcmread(path: Path | bytes, name: str, *, stop_before_pixels: bool):
    import pydicom
    from pydicom.errors import BytesLengthException, InvalidDicomError

    try:
        with _quiet() as messages:
            meta = _file_meta(path)
            if meta.get("TransferSyntaxUID") == _DEFLATED:
                _check_inflated_size(path, name, meta)
            with _binary(path) as fp:
                ds = pydicom.dcmread(fp, stop_before_pixels=stop_before_pixels)
    except InputError:
        raise
    except RecursionError:
        raise InputError(f"{name}: the header nests sequences too deeply to read (a real "
                         "mammogram nests a few levels); the file is corrupt or hostile") from None
    except (InvalidDicomError, OSError, ValueError, KeyError, EOFError, TypeError,
            AttributeError, NotImplementedError, zlib.error, struct.error,
            BytesLengthException) as exc:  # the last: a file cut inside its file meta group
        raise InputError(f"{name}: unreadable DICOM header ({type(exc).__name__}); the file "
                         "is truncated or corrupt") from None
    if any("End of file" in m for m in messages):
        raise InputError(f"{name}: the file ends early (truncated); copy it again")
    return ds


def _check_inflated_size(path: Path | bytes, name: str, meta) -> None:
    """Refuse a deflated dataset that inflates past `MAX_FILE_BYTES` (pydicom inflates it whole,
    even for the header alone), inflating 1 MiB at a time so memory stays flat."""
    length = meta.get("FileMetaInformationGroupLength")
    if length is None:  # Type 1 in PS3.10; without it the deflated data's start is unknown
        raise InputError(f"{name}: deflated file without a file meta group length; the file "
                         "is corrupt")
    inflate, total = zlib.decompressobj(-zlib.MAX_WBITS), 0
    with _binary(path) as f:
        f.seek(132 + 12 + int(length))  # preamble + 'DICM', the (0002,0000) element, the rest
        while (chunk := f.read(1 << 20)) and not inflate.eof:
            while chunk:
                total += len(inflate.decompress(chunk, 1 << 20))
                if total > MAX_FILE_BYTES:
                    raise InputError(f"{name}: its deflated data inflates past "
                                     f"{MAX_FILE_BYTES // 2**20} MiB, more than a mammogram "
                                     "needs; the file is corrupt or hostile, so it is not read")
                chunk = inflate.unconsumed_tail


def check_pixel_budget(ds, name: str) -> None:
    """Refuse, before decoding, pixels declared larger than `MAX_PIXEL_BYTES` (all frames and
    samples counted) or with a side outside 8..MAX_SIDE (a missing Rows or Columns is 0)."""
    per_sample = -(-int(ds.get("BitsAllocated", 16) or 16) // 8)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    check_dimensions(name, int(ds.get("Rows") or 0), int(ds.get("Columns") or 0),
                     bytes_per_pixel=max(per_sample, 1) * max(samples, 1) * max(frames, 1))


def read_header(path: str | Path, *, name: str | None = None):
    """The header of a DICOM file, without pixel data (quietly; errors as `InputError`)."""
    path = Path(path)
    return read_dataset(path, name or path.name, pixels=False)


def _scrub(text: str, ds) -> str:
    """``text`` with every identifying header value of ``ds`` replaced by '<redacted>'."""
    from pydicom.multival import MultiValue

    values = []
    for keyword in PHI_KEYWORDS:
        value = ds.get(keyword)
        if value is None:
            continue
        for item in (list(value) if isinstance(value, MultiValue) else [value]):
            text_value = str(item).strip()
            if len(text_value) >= 3:
                values.append(text_value)
                values.extend(p for p in re.split(r"[\^ ]+", text_value) if len(p) >= 3)
    for value in sorted(set(values), key=len, reverse=True):
        text = text.replace(value, "<redacted>")
    return " ".join(text.split())[:300]


def manufacturer(ds) -> str | None:
    """Manufacturer, to store, with the file's identifying values redacted (a careless or
    hostile header can repeat the patient's name or ID there)."""
    value = str(ds.get("Manufacturer") or "").strip()
    return _scrub(value, ds) if value else None


def grey_photometric(ds, name: str) -> str:
    """'MONOCHROME1' or 'MONOCHROME2' with one sample per pixel, else `InputError`.

    The error names the value only when it is a DICOM defined term: any other text could be
    anything, a patient's name included.
    """
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    if samples != 1 or photometric not in ("MONOCHROME1", "MONOCHROME2"):
        shown = (photometric if photometric in _PHOTOMETRIC_TERMS
                 else "missing" if not photometric else "unsupported (not a DICOM term)")
        raise InputError(f"{name}: photometric interpretation {shown} with {samples} sample(s) "
                         "per pixel; mammograms are MONOCHROME1/2")
    return photometric


def stored_pixels(ds, name: str) -> np.ndarray:
    """The stored pixel values, validated (2-D, one sample, sane size), as an integer array."""
    grey_photometric(ds, name)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames != 1:
        raise InputError(f"{name}: {frames} frames (tomosynthesis?); import 2-D mammograms "
                         "(one frame per file)")
    rows, cols = ds.get("Rows"), ds.get("Columns")
    if rows is None or cols is None or "PixelData" not in ds:
        raise InputError(f"{name}: no pixel data (Rows/Columns/PixelData missing)")
    check_pixel_budget(ds, name)
    try:
        with _quiet():
            array = ds.pixel_array
    except Exception as exc:  # decoders raise many types; their messages can quote the header
        raise InputError(f"{name}: pixel data cannot be decoded ({type(exc).__name__}; "
                         f"transfer syntax {_syntax_name(ds)}); the file is truncated or its "
                         "transfer syntax is unsupported") from None
    if array.shape != (int(rows), int(cols)):
        raise InputError(f"{name}: decoded pixels have shape {array.shape}, header says "
                         f"{int(rows)} x {int(cols)}")
    if array.dtype.kind == "i":  # signed storage: shift to unsigned, keeping the order
        bits = int(ds.get("BitsStored", 16))
        array = array.astype(np.int64) + 2 ** (bits - 1)
        array = np.clip(array, 0, 2 ** bits - 1).astype(np.uint16 if bits > 8 else np.uint8)
    elif array.dtype not in (np.uint8, np.uint16):
        array = array.astype(np.uint16)
    return array


def _syntax_name(ds) -> str:
    """The transfer syntax's name from pydicom's UID dictionary (never the header's text)."""
    uid = getattr(ds, "file_meta", {}).get("TransferSyntaxUID")
    return uid.name if uid is not None and uid.type == "Transfer Syntax" else "unknown"


def denser_brighter(ds, stored: np.ndarray) -> np.ndarray:
    if str(ds.get("PhotometricInterpretation", "")).strip().upper() != "MONOCHROME1":
        return stored
    bits = int(ds.get("BitsStored", 8 * stored.dtype.itemsize))
    return (2 ** bits - 1 - stored.astype(np.int64)).clip(0).astype(stored.dtype)


def display_window(ds, dtype) -> np.ndarray | None:
    """The header's display mapping as a lookup table: entry ``v`` is the 8-bit grey level a
    pixel of value ``v`` (brighter = denser, as `dicom_pixels` returns it) is shown at, so
    ``window[pixels]`` is the image as a viewer shows it: modality LUT, then the VOI LUT or the
    first window. None when the header has neither (the screen then uses percentiles).

    Why a table: both LUTs map values one by one, so 65,536 entries (256 for uint8 pixels)
    cost ~2 ms where mapping a 2,048 x 1,536 image in float64 took ~70 ms, and the table is
    what a pulled copy keeps of its header (`core.io.pixels.pgm_bytes`).
    """
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    has_lut = "VOILUTSequence" in ds
    has_window = "WindowCenter" in ds and "WindowWidth" in ds
    if not (has_lut or has_window):
        return None
    dtype = np.dtype(dtype)
    values = np.arange(256 if dtype == np.uint8 else 65536, dtype=dtype)[None, :]
    monochrome1 = str(ds.get("PhotometricInterpretation", "")).strip().upper() == "MONOCHROME1"
    if monochrome1:  # back to stored values: `denser_brighter` is its own inverse
        values = denser_brighter(ds, values)
    with _quiet():
        if "RescaleSlope" in ds or "RescaleIntercept" in ds:
            values = apply_modality_lut(values, ds)
        out = apply_voi_lut(values, ds, index=0).astype(np.float64)
    if has_lut:
        descriptor = ds.VOILUTSequence[0].LUTDescriptor
        top = 2.0 ** int(descriptor[2]) - 1
    else:
        top = 2.0 ** int(ds.get("BitsStored", 16)) - 1
    scaled = np.clip(out / max(top, 1.0), 0, 1)
    if monochrome1:
        scaled = 1.0 - scaled
    return np.round(scaled * 255).astype(np.uint8).ravel()


def dicom_pixels(path: str | Path) -> np.ndarray:
    """A DICOM file's pixels as (H, W) uint8/uint16, brighter = denser (MONOCHROME1 inverted)."""
    return _decoded(Path(path))[1]


def dicom_display_source(path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """`dicom_pixels` and the header's `display_window` (or None), from one read."""
    path = Path(path)
    ds, pixels = _decoded(path)
    with header_errors(path.name):
        return pixels, display_window(ds, pixels.dtype)


def _decoded(path: Path):
    ds = read_dataset(path, path.name)
    with header_errors(path.name):
        return ds, denser_brighter(ds, stored_pixels(ds, path.name))


@contextlib.contextmanager
def header_errors(name: str):
    """Malformed header values (common in the wild) raise many types when first accessed;
    turn them into one `InputError` in our own words (pydicom's could quote the value)."""
    from pydicom.errors import BytesLengthException

    try:
        with _quiet():
            yield
    except InputError:
        raise
    except (ValueError, TypeError, KeyError, AttributeError, IndexError, OverflowError,
            EOFError, NotImplementedError, struct.error, BytesLengthException) as exc:
        raise InputError(f"{name}: unusable header value ({type(exc).__name__}); the file is "
                         "truncated or its header is malformed") from None
