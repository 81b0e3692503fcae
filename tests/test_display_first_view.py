"""Screen copies made on first view (issue 33): an import writes none, the first view makes one
at the asked size and caches it, a store from before keeps showing its display copies, and the
window a DICOM header carries reaches the screen (from the file, or a pulled PGM copy)."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from core.demo.images import render_view
from core.errors import InputError
from core.importers.dicom import import_dicom
from core.io.dicom import denser_brighter, display_window
from core.io.display import CACHE_DIR, cache_path, display_image
from core.io.images import read_display_source, read_pixels
from core.io.pixels import pgm_bytes, pgm_window, to_display, write_png
from core.reports.exam import exam_images
from core.store import open_store
from tests.test_exam_view import _block
from tests.test_import_dicom import linear_window, make_dicom

SHAPE = (330, 200)   # rows, cols: long side 330, so 64 asks for factor 6 -> 55 x 33


@pytest.fixture
def views(tmp_path):
    """Two views of one exam, 12-bit: R-CC with a window in its header, L-CC without."""
    root = tmp_path / "scans"
    out = {}
    for lat, window in (("R", (1800, 1201)), ("L", None)):
        raw, _ = render_view(np.random.default_rng(ord(lat)), laterality=lat, view="CC",
                             density=2, shape=SHAPE)
        out[lat] = (make_dicom(root / f"{lat}.dcm", pixels=raw.astype(np.uint16),
                               laterality=lat, window=window), window)
    return root, out


def _imported(tmp_path, root):
    store = open_store(tmp_path / "s.duckdb")
    assert import_dicom(store, root, dataset="hosp").counts()["imported"] == 2
    return store, store.images(dataset="hosp").set_index("laterality")


def _expected(pixels, window, factor):
    """Independently: the window over the full image, then block means (a header window); or
    block means, then the percentile window (none)."""
    if window is None:
        return to_display(_block(pixels, factor).astype(np.float32))
    return np.rint(_block(linear_window(pixels, *window, bits=12), factor)).astype(np.uint8)


def test_import_writes_no_display_copy_and_a_first_view_makes_one(tmp_path, views):
    root, made = views
    store, images = _imported(tmp_path, root)
    assert images["display_path"].isna().all()
    assert not [p for p in store.files_dir.rglob("*") if p.is_file()]   # nothing at import
    for lat, (pixels, window) in made.items():
        row = images.loc[lat].to_dict()
        shown = display_image(store.files_dir, row, long_side=64)
        assert shown.factor == 6 and shown.pixels.shape == (55, 33)
        assert shown.original_shape == SHAPE and shown.pixels.dtype == np.uint8
        assert shown.source == ("percentile window" if window is None else "DICOM window")
        expected = _expected(pixels, window, 6)
        assert np.abs(shown.pixels.astype(int) - expected).max() <= 1   # float rounding only
        kind = "percentile" if window is None else "window"
        cached = cache_path(store.files_dir, row["sha256"], 64, kind)
        np.testing.assert_array_equal(read_pixels(cached), shown.pixels)
    cached = sorted(p.name for p in (store.files_dir / CACHE_DIR).rglob("*.png"))
    assert len(cached) == 2 and not (store.files_dir / "display").exists()


def test_a_second_view_reads_the_cache_and_another_size_makes_another(tmp_path, views):
    root, _ = views
    store, images = _imported(tmp_path, root)
    row = images.loc["R"].to_dict()
    first = display_image(store.files_dir, row, long_side=64)
    (root / "R.dcm").unlink()   # the file gone: only the cache can answer now
    again = display_image(store.files_dir, row, long_side=64)
    np.testing.assert_array_equal(again.pixels, first.pixels)
    assert (again.factor, again.source, again.original_shape) == \
        (first.factor, first.source, first.original_shape)
    with pytest.raises(InputError, match="does not exist"):   # 128 px was never made
        display_image(store.files_dir, row, long_side=128)


def test_exam_tiles_come_from_the_cache(tmp_path, views):
    root, made = views
    store, _ = _imported(tmp_path, root)
    exam_id = store.exams(dataset="hosp")["exam_id"].iat[0]
    tiles = exam_images(store, exam_id, long_side=64)          # R-CC, L-CC, no MLOs
    assert tiles[2:] == [None, None]
    assert len(list((store.files_dir / CACHE_DIR).rglob("*.png"))) == 2
    for tile, lat in zip(tiles[:2], "RL"):
        pixels, window = made[lat]
        expected = _expected(pixels, window, 6)
        assert np.abs(tile.pixels.astype(int)
                      - (expected[:, ::-1] if tile.flipped else expected)).max() <= 1


def test_an_old_store_still_shows_its_display_copies(tmp_path, views):
    """A row from before issue 33 names a full-resolution 8-bit copy: the screen uses it, its
    block means, and a re-import of the unchanged file keeps it (and stays a skip)."""
    root, _ = views
    store, images = _imported(tmp_path, root)
    row = images.loc["L"].to_dict()
    old = np.full(SHAPE, 40, np.uint8)
    old[:, :60] = 220       # unlike anything the file's own pixels would give
    rel = f"display/hosp/{row['exam_id'].split('/')[1]}/{row['image_key']}.png"
    write_png(store.files_dir / rel, old, compress_level=1)
    stored = store.select("images", image_id=row["image_id"]).assign(display_path=rel)
    store.write_tables({"images": stored})
    row = store.images(dataset="hosp").set_index("laterality").loc["L"].to_dict()
    shown = display_image(store.files_dir, row, long_side=64)
    assert shown.source == "display copy" and shown.factor == 6
    np.testing.assert_array_equal(shown.pixels, np.rint(_block(old, 6)).astype(np.uint8))
    assert not (store.files_dir / CACHE_DIR).exists()      # an old copy needs no cache
    assert import_dicom(store, root, dataset="hosp").counts() == \
        {"imported": 0, "skipped": 2, "failed": 0}
    assert store.select("images", image_id=row["image_id"])["display_path"].iat[0] == rel
    (store.files_dir / rel).unlink()       # its copy lost: the file's own pixels again
    assert display_image(store.files_dir, row, long_side=64).source == "percentile window"


def test_a_files_folder_that_cannot_be_written_still_shows(tmp_path, views):
    root, made = views
    store, images = _imported(tmp_path, root)
    store.files_dir.mkdir(parents=True, exist_ok=True)
    (store.files_dir / CACHE_DIR).write_text("a file where the cache folder would go")
    shown = display_image(store.files_dir, images.loc["L"].to_dict(), long_side=64)
    expected = _expected(made["L"][0], None, 6)
    assert np.abs(shown.pixels.astype(int) - expected).max() <= 1


def test_long_side_is_checked(tmp_path, views):
    root, _ = views
    store, images = _imported(tmp_path, root)
    with pytest.raises(InputError, match="long_side must be an integer >= 16"):
        display_image(store.files_dir, images.loc["L"].to_dict(), long_side=8)


# ---------------------------------------------------------------------------- the window

def test_a_pulled_copy_keeps_its_window_after_the_pixels(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 65536, (40, 30), dtype=np.uint16)
    window = np.random.default_rng(1).integers(0, 256, 65536, dtype=np.uint8)
    path = tmp_path / "c.pgm"
    path.write_bytes(pgm_bytes(pixels, window=window))
    np.testing.assert_array_equal(read_pixels(path), pixels)      # Pillow reads the first image
    got, lut = read_display_source(path)
    np.testing.assert_array_equal(got, pixels)
    np.testing.assert_array_equal(lut, window)
    path.write_bytes(pgm_bytes(pixels))
    assert pgm_window(path) is None
    path.write_bytes(pgm_bytes(pixels, window=window)[:-1])        # cut: no window, no guess
    assert pgm_window(path) is None
    with pytest.raises(ValueError, match="window must be uint8 of shape"):
        pgm_bytes(pixels, window=window[:256])


@settings(max_examples=40, deadline=None)
@given(bits=st.sampled_from([10, 12, 16]), monochrome1=st.booleans(),
       center=st.floats(0, 1), width=st.floats(0.001, 1.5), seed=st.integers(0, 2**16))
def test_the_window_table_equals_the_window_by_hand(bits, monochrome1, center, width, seed):
    """`display_window` indexed by the pixels (brighter = denser) = the header's linear window
    over the stored values, by hand, inverted for MONOCHROME1."""
    from pydicom.dataset import Dataset

    top = 2 ** bits - 1
    ds = Dataset()
    ds.PhotometricInterpretation = "MONOCHROME1" if monochrome1 else "MONOCHROME2"
    ds.BitsStored, ds.PixelRepresentation = bits, 0
    ds.WindowCenter, ds.WindowWidth = round(center * top, 1), max(1.0, round(width * top, 1))
    stored = np.random.default_rng(seed).integers(0, top + 1, (20, 20), dtype=np.uint16)
    reference = linear_window(stored, float(ds.WindowCenter), float(ds.WindowWidth), bits=bits)
    if monochrome1:
        reference = 255 - reference
    got = display_window(ds, np.uint16)[denser_brighter(ds, stored)]
    assert np.abs(got.astype(int) - reference).max() <= 1


def test_no_window_in_the_header_means_none():
    from pydicom.dataset import Dataset

    ds = Dataset()
    ds.PhotometricInterpretation, ds.BitsStored = "MONOCHROME2", 12
    assert display_window(ds, np.uint16) is None
