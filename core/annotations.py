"""Tumour annotations: a radiologist's rough drawing -> a filled segmentation, and mask versions.

`fill_drawing` is the study's Algorithm 3 (thesis appendix A): close the drawing (dilation, then
erosion, with a disk of 50 pixels), fill its holes; if filling changed nothing the contour was
not closed, so close the result again with 75, then 100 pixels; if it is still open, take the
convex hull of the last closing. Each closing works on the one before, as in the thesis.

Those sizes are pixels of the study's images, so an image with larger pixels gets smaller
elements: the study's 50 px at `STUDY_SPACING_MM` is 3.5 mm, 17.5 px on mini-MIAS (0.2 mm).
Why: on a 0.2 mm image a 50 px disk (10 mm) is wider than a small tumour's whole outline, so
the first closing already filled a clearly closed ring, filling changed nothing, and the ring
was reported "never closed" (convex hull).

Every saved mask is a new version (`save_annotation`): the store never overwrites one, records
author, source, time and the version it was edited from (``parent``), and the newest version is
the default everywhere (`load_annotation`).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Integral, Real
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from core.errors import InputError
from core.validation import check_choice
from core.vocabulary import ANNOTATION_SOURCES

__all__ = ["STUDY_SIZES_PX", "STUDY_SPACING_MM", "FilledDrawing", "ImportedMasks", "annotation_versions",
           "fill_drawing", "import_masks", "load_annotation", "save_annotation", "study_sizes_px"]

STUDY_SIZES_PX = (50, 75, 100)  # Ellipse(50), (75), (100): height and width in pixels
# The pixel size those sizes were drawn at. The thesis gives the elements in pixels only and
# does not print a pixel spacing; its drawings are on the Erasmus MC's full-field digital
# mammograms (after 2006, section 4.1.1) at full resolution. 0.07 mm is the pixel pitch of the
# common FFDM detector (Hologic Selenia), an assumption the page and CLI state: pass
# ``sizes_px`` or ``sizes_mm`` to `fill_drawing` to use other elements.
STUDY_SPACING_MM = 0.07


@dataclass(frozen=True)
class FilledDrawing:
    """What `fill_drawing` made.

    mask : bool ndarray of shape (H, W), the segmentation.
    step : 1-based index of the element size that closed the contour (the last one if none did).
    size_px : that element's diameter in pixels.
    closed : a closing made filling change something (the contour closed).
    hull_used : no closing closed it; ``mask`` is the convex hull of the last closing.
    """

    mask: np.ndarray
    step: int
    size_px: float
    closed: bool
    hull_used: bool
    sizes_px: tuple[float, ...] = ()   # the element diameters tried, in this image's pixels

    def describe(self, spacing_mm: float | None = None) -> str:
        """One line for a caption: how it closed, at which element size (with mm when the
        pixel spacing is known)."""
        if self.hull_used:
            return (f"convex hull (never closed with elements of "
                    f"{', '.join(f'{s:.4g}' for s in self.sizes_px)} px)")
        mm = "" if spacing_mm is None else f" = {self.size_px * spacing_mm:.3g} mm"
        return f"closed at step {self.step} ({self.size_px:.4g} px{mm})"


def fill_drawing(drawing, *, spacing_mm: float | None = None,
                 sizes_px: Sequence[float] | None = None,
                 sizes_mm: Sequence[float] | None = None) -> FilledDrawing:
    """The study's Algorithm 3: a drawn contour (H, W) -> a filled segmentation.

    Parameters
    ----------
    drawing : array-like of shape (H, W), bool or numbers (non-zero = drawn)
    spacing_mm : this image's mm per pixel, keyword-only. With neither ``sizes_px`` nor
        ``sizes_mm``, the study's 50, 75, 100 px are scaled to it (`study_sizes_px`); None keeps
        them as pixels of this image.
    sizes_px : increasing element diameters in this image's pixels, used as given.
    sizes_mm : the same in millimetres (converted with ``spacing_mm``, which it needs).

    Returns
    -------
    FilledDrawing

    Notes
    -----
    The element is the disk of diameter ``size`` (``skimage.morphology.disk(size / 2)``:
    offsets with ``dr**2 + dc**2 <= (size / 2)**2``). Dilation and erosion by it are thresholds
    of SciPy's exact Euclidean distance transform, which equal ``binary_dilation`` /
    ``binary_erosion`` with that footprint but cost the same for any size; they run on the
    drawing's bounding box plus a margin wider than the largest disk, the plane beyond the image
    counting as empty (a closing never leaves the drawing's convex hull, so nothing is lost).
    """
    drawn = _check_drawing(drawing)
    sizes = _element_sizes(sizes_px, sizes_mm, spacing_mm)
    rows, cols = np.flatnonzero(drawn.any(axis=1)), np.flatnonzero(drawn.any(axis=0))
    margin = int(np.ceil(max(sizes) / 2)) + 2
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    current = np.pad(drawn[r0:r1, c0:c1], margin)
    filled, closed, step = current, False, len(sizes)
    for step, size in enumerate(sizes, start=1):
        current = _closing(current, size / 2)
        filled = ndi.binary_fill_holes(current)
        if not np.array_equal(filled, current):
            closed = True
            break
    if not closed:
        from skimage.morphology import convex_hull_image

        filled = convex_hull_image(current)
    mask = np.zeros(drawn.shape, bool)
    mask[r0:r1, c0:c1] = filled[margin:margin + r1 - r0, margin:margin + c1 - c0]
    return FilledDrawing(mask, step, float(sizes[step - 1]), closed, not closed,
                         tuple(float(v) for v in sizes))


def _closing(image: np.ndarray, radius: float) -> np.ndarray:
    """Dilation then erosion by the disk ``dr**2 + dc**2 <= radius**2``, via distance maps."""
    dilated = ndi.distance_transform_edt(~image) <= radius
    return ndi.distance_transform_edt(dilated) > radius


def _check_drawing(drawing) -> np.ndarray:
    array = np.asarray(drawing)
    if array.ndim != 2:
        raise InputError(f"drawing has shape {array.shape}; pass a 2-D array (H, W)")
    if array.dtype != bool:
        if not np.issubdtype(array.dtype, np.number):
            raise InputError(f"drawing has dtype {array.dtype}; pass bool or numbers")
        array = array != 0
    if not array.any():
        raise InputError("drawing is empty; draw the tumour's contour first")
    return array


def study_sizes_px(spacing_mm: float | None) -> tuple[float, ...]:
    """The study's element diameters (`STUDY_SIZES_PX` at `STUDY_SPACING_MM`) in pixels of an
    image with ``spacing_mm`` mm per pixel: 50 * 0.07 / 0.2 = 17.5 px on mini-MIAS. None (no
    spacing stored): the study's pixels unchanged."""
    if spacing_mm is None:
        return tuple(float(p) for p in STUDY_SIZES_PX)
    _check_spacing(spacing_mm)
    scale = STUDY_SPACING_MM / float(spacing_mm)   # exactly 1.0 at the study's spacing
    return tuple(p * scale for p in STUDY_SIZES_PX)


def _check_spacing(spacing_mm) -> None:
    if isinstance(spacing_mm, bool) or not isinstance(spacing_mm, Real) or not spacing_mm > 0:
        raise InputError(f"spacing_mm must be a positive number; got {spacing_mm!r}")


def _element_sizes(sizes_px, sizes_mm, spacing_mm) -> list[float]:
    if sizes_px is not None and sizes_mm is not None:
        raise InputError("pass sizes_px or sizes_mm, not both")
    if sizes_mm is not None:
        if spacing_mm is None:
            raise InputError("sizes_mm needs spacing_mm (mm per pixel); pass it, or sizes_px")
        _check_spacing(spacing_mm)
        values, name = [s / spacing_mm for s in _sizes(sizes_mm, "sizes_mm")], "sizes_mm"
    elif sizes_px is not None:
        values, name = _sizes(sizes_px, "sizes_px"), "sizes_px"
    else:
        values, name = list(study_sizes_px(spacing_mm)), "spacing_mm"
    if any(v < 1 for v in values):
        raise InputError(f"{name} gives an element under 1 pixel ({values}); pass larger sizes")
    return values


def _sizes(values, name: str) -> list[float]:
    try:
        sizes = [float(v) for v in values]
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a list of numbers; got {values!r}") from None
    if not sizes or not all(np.isfinite(sizes)) or any(b <= a for a, b in zip(sizes, sizes[1:])):
        raise InputError(f"{name} must be finite and increasing, e.g. (50, 75, 100); got {sizes}")
    return sizes


# ---------------------------------------------------------------------------- versions
def save_annotation(store, image_id: str, mask, *, author: str, source: str,
                    parent: int | None = None, note: str | None = None) -> int:
    """Save ``mask`` as a new version of the image's annotation; returns its version number.

    mask : bool array of the image's shape (H, W), at least one pixel.
    author : who drew or made it. source : one of ``ANNOTATION_SOURCES``.
    parent : the version it was edited from (None: drawn afresh). Old versions never change.
    """
    check_choice(source, ANNOTATION_SOURCES, name="source")
    if not isinstance(author, str) or not author.strip():
        raise InputError(f"author must be a non-empty name; got {author!r}")
    if parent is not None and (isinstance(parent, bool) or not isinstance(parent, Integral)):
        raise InputError(f"parent must be a version number or None; got {parent!r}")
    image = store.image(image_id)  # raises for an unknown image
    mask = _check_mask(mask, image, image_id)
    return store.add_annotation(image_id, mask, source=source, author=author.strip(), note=note,
                                parent=None if parent is None else int(parent))


def annotation_versions(store, image_id: str) -> pd.DataFrame:
    """Every version of an image's annotation, oldest first, newest flagged ``latest``.

    Columns: image_id, version, source, author, created_at, mask_path, note, parent, latest.
    """
    store.image(image_id)
    versions = store.annotations(image_id)
    return versions.assign(latest=versions["version"] == versions["version"].max())


def load_annotation(store, image_id: str, version: int | None = None) -> np.ndarray:
    """An annotation's mask (bool (H, W)): the newest version, or ``version``."""
    versions = annotation_versions(store, image_id)
    if versions.empty:
        raise InputError(f"image {image_id} has no annotation; draw or import one first")
    if version is None:
        row = versions.iloc[-1]
    else:
        match = versions[versions["version"] == version]
        if match.empty:
            raise InputError(f"annotation version {version!r} of {image_id} does not exist "
                             f"(versions: {', '.join(map(str, versions['version']))})")
        row = match.iloc[0]
    return store.load_mask(row["mask_path"])


def _check_mask(mask, image: dict, image_id: str) -> np.ndarray:
    array = np.asarray(mask)
    if array.ndim != 2:
        raise InputError(f"mask for {image_id} has shape {array.shape}; pass a 2-D mask")
    shape = (image.get("height"), image.get("width"))
    if None not in shape and not pd.isna(shape[0]) and array.shape != tuple(map(int, shape)):
        raise InputError(f"mask for {image_id} has shape {array.shape} but the image is "
                         f"{int(shape[0])} x {int(shape[1])}; draw on the full-size image")
    return array != 0


# ---------------------------------------------------------------------------- imports
@dataclass(frozen=True)
class ImportedMasks:
    """What `import_masks` did: ``versions`` image_id -> new version; ``unchanged`` images whose
    newest version already held the same mask."""

    dataset: str
    versions: dict[str, int]
    unchanged: list[str]

    def to_dict(self) -> dict:
        return {"dataset": self.dataset, "n_added": len(self.versions),
                "n_unchanged": len(self.unchanged), "versions": self.versions,
                "unchanged": self.unchanged}


def import_masks(store, folder: str | Path, *, dataset: str, author: str | None = None,
                 note: str | None = None) -> ImportedMasks:
    """Add every PNG mask in ``folder`` as a new 'imported' version of its image.

    File names are image keys (``<image_key>.png``) of ``dataset``, or, where a key names
    several images (DICOM's ``L-CC``), the image id after ``<dataset>/`` with ``/`` as ``_``.
    Every file is checked
    first (a known image, readable, two grey levels at most, the image's size, not empty);
    the first fault is one error and nothing is written. All new versions land in one
    transaction; a mask equal to the image's newest version adds none.
    """
    from core.io.pixels import read_raster

    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder; pass the folder that holds the mask PNGs")
    if dataset not in store.dataset_names():
        raise InputError(f"dataset {dataset!r} is not in the store (known: "
                         f"{', '.join(store.dataset_names()) or 'none'}); import its images first")
    entries = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".png")
    _refuse_links_out(folder, entries)
    files = [p for p in entries if p.is_file()]
    if not files:
        raise InputError(f"{folder} holds no .png masks; name each <image_key>.png")
    images = store.images(dataset=dataset)
    by_name = _names(images, dataset)
    unknown = [p.name for p in files if p.stem not in by_name]
    if unknown:
        raise InputError(f"{len(unknown)} mask file(s) name no image of {dataset} "
                         f"({', '.join(unknown[:3])}{' ...' if len(unknown) > 3 else ''}); "
                         "name each mask after its image key")
    masks, unchanged = {}, []
    for path in files:
        image = images.iloc[by_name[path.stem]].to_dict()
        pixels = read_raster(path)
        if np.unique(pixels).size > 2:
            raise InputError(f"{path.name} has {np.unique(pixels).size} grey levels; a mask has "
                             "two (0 = background), so pass a binary PNG")
        mask = _check_mask(pixels, image, image["image_id"])
        if not mask.any():
            raise InputError(f"{path.name} is empty (all 0); pass a mask with the lesion marked")
        stored = store.annotations(image["image_id"])
        if not stored.empty and np.array_equal(store.load_mask(stored["mask_path"].iloc[-1]), mask):
            unchanged.append(image["image_id"])
        else:
            masks[image["image_id"]] = mask
    rows = store.stage_masks(masks, source="imported", author=author, note=note)
    if not rows.empty:
        store.write_tables({"annotations": rows})
    return ImportedMasks(dataset, dict(zip(rows["image_id"], rows["version"].astype(int))),
                         unchanged)


def _refuse_links_out(folder: Path, entries: list[Path]) -> None:
    """Refuse symbolic links that lead outside ``folder``, as manifest paths are
    (`core.importers.common.safe_relative`): a mask folder must not make the import read
    files elsewhere (``x.png -> /home/someone/...``). Links inside the folder are fine."""
    root = folder.resolve()
    outside = [p.name for p in entries if p.is_symlink() and not p.resolve().is_relative_to(root)]
    if outside:
        more = " ..." if len(outside) > 3 else ""
        raise InputError(f"{len(outside)} mask file(s) are symbolic links that lead outside "
                         f"{folder} ({', '.join(outside[:3])}{more}); copy the masks into the "
                         "folder instead")


def _names(images: pd.DataFrame, dataset: str) -> dict[str, int]:
    """File stem -> row position: unique image keys, and every image id in file-name form."""
    counts = images["image_key"].value_counts()
    names = {key: i for i, key in enumerate(images["image_key"]) if counts[key] == 1}
    for i, image_id in enumerate(images["image_id"]):
        names[image_id.removeprefix(f"{dataset}/").replace("/", "_")] = i
    return names
