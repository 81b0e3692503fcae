"""Drawings to segmentations (the study's Algorithm 3) on hand-made drawings, and annotation
versions that never change once saved."""
from __future__ import annotations

import json

import duckdb
import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.morphology import convex_hull_image

from cli import main
from core.annotations import (annotation_versions, fill_drawing, import_masks, load_annotation,
                              save_annotation)
from core.annotations import _closing
from core.errors import InputError
from core.io.pixels import read_mask, write_mask, write_png
from core.store import open_store
from core.store import schema as schema_module
from tests.conftest import copy_store

SHAPE = (400, 360)


def ring(*, gap_px: float = 0, radius: float = 90, width: float = 3, centre=(200, 180),
         shape=SHAPE) -> np.ndarray:
    """A drawn circle of stroke ``width``, missing an arc ``gap_px`` long around angle 0."""
    rr, cc = np.ogrid[:shape[0], :shape[1]]
    dist = np.hypot(rr - centre[0], cc - centre[1])
    arc = np.abs(np.arctan2(rr - centre[0], cc - centre[1])) * radius   # arc length from angle 0
    return (np.abs(dist - radius) <= width / 2) & (arc >= gap_px / 2)


def disk_footprint(radius: float) -> np.ndarray:
    n = int(np.floor(radius))
    y, x = np.ogrid[-n:n + 1, -n:n + 1]
    return x * x + y * y <= radius * radius


@pytest.mark.parametrize("radius", [3, 7.5, 12.5, 25])
def test_closing_equals_scipy_morphology_with_the_disk(radius):
    """The distance-map closing == binary_dilation then binary_erosion with the disk footprint
    (skimage's disk for integer radii), on random scribbles with room around them."""
    rng = np.random.default_rng(int(radius * 10))
    pad = int(radius) + 2
    drawing = np.pad(rng.random((40, 50)) < 0.03, pad)
    fp = disk_footprint(radius)
    expected = ndi.binary_erosion(ndi.binary_dilation(drawing, fp), fp)
    np.testing.assert_array_equal(_closing(drawing, radius), expected)
    if radius == int(radius):
        from skimage.morphology import disk
        np.testing.assert_array_equal(disk(int(radius)), fp)


def test_closed_ring_is_filled_at_the_first_step():
    drawing = ring()
    out = fill_drawing(drawing)
    assert (out.step, out.size_px, out.closed, out.hull_used) == (1, 50, True, False)
    expected = ndi.binary_fill_holes(drawing)
    assert (out.mask != expected).sum() <= 0.001 * expected.sum()   # closing rounds a few edges
    assert out.mask[drawing].all()


def test_small_gap_closes_at_the_first_step():
    out = fill_drawing(ring(gap_px=10))
    assert out.step == 1 and out.closed and not out.hull_used
    assert out.mask[200, 180] and out.mask[200, 180 + 90]          # centre and the bridged gap


@pytest.mark.parametrize("gap_px,step", [(22, 2), (28, 3)])
def test_wider_gaps_need_the_second_or_third_step(gap_px, step):
    """A 6-pixel stroke: a disk slips through a gap wider than about twice its half-chord at
    the stroke's edge, so 50 px closes gaps up to ~18 px, 75 px up to ~25 px, 100 px ~29 px."""
    out = fill_drawing(ring(gap_px=gap_px, width=6))
    assert out.step == step and out.size_px == (50, 75, 100)[step - 1] and out.closed
    assert out.mask[200, 180] and out.mask.sum() > 0.95 * np.pi * 90 ** 2


def test_open_arc_ends_as_its_convex_hull():
    arc = ring(gap_px=np.pi * 90)                                  # half a circle drawn
    out = fill_drawing(arc)
    assert out.hull_used and not out.closed and out.step == 3
    closed = np.pad(arc, 60)
    for size in (50, 75, 100):                  # each closing on the one before (thesis)
        closed = _closing(closed, size / 2)
    np.testing.assert_array_equal(out.mask, convex_hull_image(closed)[60:-60, 60:-60])
    assert out.mask[arc].all() and out.mask.sum() < np.pi * 90 ** 2 / 2 * 1.1


def test_sizes_in_mm_and_a_drawing_at_the_image_edge():
    """5 mm at 0.1 mm/pixel is the study's 50 pixels; a ring cut by the image edge still fills."""
    drawing = ring(gap_px=10)
    mm = fill_drawing(drawing, spacing_mm=0.1, sizes_mm=(5, 7.5, 10))
    np.testing.assert_array_equal(mm.mask, fill_drawing(drawing).mask)
    edge = ring(centre=(60, 60), radius=50)[:, 30:]                 # the ring runs off the left
    out = fill_drawing(edge)
    assert out.mask.shape == edge.shape and out.mask[60, 40]


def test_fill_input_errors():
    with pytest.raises(InputError, match="empty"):
        fill_drawing(np.zeros((20, 20)))
    with pytest.raises(InputError, match="2-D"):
        fill_drawing(np.ones((2, 20, 20)))
    with pytest.raises(InputError, match="spacing_mm"):
        fill_drawing(ring(), sizes_mm=(5, 7, 10))
    with pytest.raises(InputError, match="increasing"):
        fill_drawing(ring(), sizes_px=(75, 50))


# --- versions ----------------------------------------------------------------------------------

@pytest.fixture
def store(demo_store_path, tmp_path):
    return open_store(copy_store(demo_store_path, tmp_path))


IMAGE = "demo/E00001/L-CC"


def test_ids_that_read_alike_never_share_a_mask_file():
    from core.store import annotation_mask_path

    a, b = annotation_mask_path("a/b_c/L-CC", 1), annotation_mask_path("a_b/c/L-CC", 1)
    assert a != b and a.parent.name.startswith("a_b_c_L-CC-") and a.name == "v1.png"


def test_a_new_version_never_changes_an_old_one(store):
    first = np.zeros((512, 320), bool)
    first[100:150, 100:140] = True
    v1 = save_annotation(store, IMAGE, first, author="r1", source="drawn")
    path1 = store.files_dir / store.annotations(IMAGE).iloc[-1]["mask_path"]
    bytes1 = path1.read_bytes()
    second = fill_drawing(ring(shape=(512, 320), centre=(300, 160), radius=40)).mask
    v2 = save_annotation(store, IMAGE, second, author="r2", source="derived", parent=v1,
                         note="refilled")
    assert v2 == v1 + 1
    assert path1.read_bytes() == bytes1
    np.testing.assert_array_equal(load_annotation(store, IMAGE, v1), first)
    np.testing.assert_array_equal(load_annotation(store, IMAGE), second)   # latest by default
    versions = annotation_versions(store, IMAGE).set_index("version")
    assert versions.loc[v2, ["author", "source", "parent", "note"]].tolist() == [
        "r2", "derived", v1, "refilled"]
    assert versions["latest"].tolist() == [False] * (len(versions) - 1) + [True]
    assert versions["created_at"].notna().all() and versions["parent"].isna()[v1]


def test_bad_versions_change_nothing(store):
    before = store.counts()["annotations"]
    good = np.zeros((512, 320), bool)
    good[5:9, 5:9] = True
    for kwargs, match in [({"source": "scribbled"}, "source"), ({"parent": 7}, "parent version"),
                          ({"author": " "}, "author")]:
        args = {"author": "r1", "source": "drawn", **kwargs}
        with pytest.raises(InputError, match=match):
            save_annotation(store, IMAGE, good, **args)
    with pytest.raises(InputError, match="512 x 320"):
        save_annotation(store, IMAGE, good[:100], author="r1", source="drawn")
    with pytest.raises(InputError, match="empty"):
        save_annotation(store, IMAGE, good & False, author="r1", source="drawn")
    with pytest.raises(InputError, match="not in the store"):
        save_annotation(store, "demo/nope", good, author="r1", source="drawn")
    with pytest.raises(InputError, match="version 9"):
        load_annotation(store, "demo/E00002/L-CC", 9)
    assert store.counts()["annotations"] == before


def test_v5_store_gains_the_parent_column(tmp_path):
    path = tmp_path / "s.duckdb"
    store = open_store(path)
    store.write_tables({"datasets": __import__("pandas").DataFrame(
        [{"dataset": "x", "kind": "imported"}])})
    con = duckdb.connect(str(path))
    con.execute("INSERT INTO annotations (image_id, version, source, mask_path) "
                "VALUES ('x/a', 1, 'imported', 'masks/a.png')")
    con.execute("ALTER TABLE annotations DROP COLUMN parent")
    con.execute("UPDATE meta SET value = '5' WHERE key = 'schema_version'")
    con.close()
    assert schema_module.SCHEMA_VERSION >= 6
    migrated = open_store(path)
    assert migrated.schema_version() == schema_module.SCHEMA_VERSION
    rows = migrated.select("annotations")
    assert list(rows.columns) == list(schema_module.TABLE_COLUMNS["annotations"])
    assert rows["mask_path"].tolist() == ["masks/a.png"] and rows["parent"].isna().all()


# --- imports and the CLI -----------------------------------------------------------------------

def test_import_masks_as_versions(store, tmp_path):
    folder = tmp_path / "masks"
    mask = np.zeros((512, 320), bool)
    mask[200:260, 100:180] = True
    write_mask(folder / "E00001_L-CC.png", mask)
    write_mask(folder / "E00003_R-MLO.png", ~mask)
    before = {i: len(store.annotations(i)) for i in (IMAGE, "demo/E00003/R-MLO")}
    code = main(["annotate", "import", str(folder), "--dataset", "demo", "--db", str(store.path),
                 "--author", "site", "--json"])
    assert code == 0
    for image_id, expected in ((IMAGE, mask), ("demo/E00003/R-MLO", ~mask)):
        versions = store.annotations(image_id)
        assert len(versions) == before[image_id] + 1
        assert versions.iloc[-1][["source", "author"]].tolist() == ["imported", "site"]
        np.testing.assert_array_equal(load_annotation(store, image_id), expected)
    again = import_masks(store, folder, dataset="demo")               # identical: no new version
    assert again.versions == {} and sorted(again.unchanged) == [IMAGE, "demo/E00003/R-MLO"]


@pytest.mark.parametrize("name,pixels,match", [
    ("nobody.png", np.full((512, 320), 255, np.uint8), "name no image"),
    ("E00001_L-CC.png", np.arange(512 * 320).reshape(512, 320) % 3 * 100, "grey levels"),
    ("E00001_L-CC.png", np.full((50, 32), 255, np.uint8), "512 x 320"),
    ("E00001_L-CC.png", np.zeros((512, 320), np.uint8), "empty")])
def test_import_refuses_bad_masks_in_one_line_and_writes_nothing(store, tmp_path, capsys, name,
                                                                 pixels, match):
    folder = tmp_path / "masks"
    good = np.zeros((512, 320), bool)
    good[1:5, 1:5] = True
    write_mask(folder / "E00002_L-CC.png", good)
    write_png(folder / name, pixels.astype(np.uint8))
    before = store.counts()["annotations"]
    code = main(["annotate", "import", str(folder), "--dataset", "demo", "--db", str(store.path)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and match in err
    assert store.counts()["annotations"] == before


def test_fill_cli_writes_what_fill_drawing_makes(tmp_path, capsys):
    drawing = ring(gap_px=16)
    write_png(tmp_path / "drawing.png", drawing.astype(np.uint8) * 255)
    code = main(["annotate", "fill", str(tmp_path / "drawing.png"), "--out",
                 str(tmp_path / "filled.png"), "--spacing", "0.07", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    expected = fill_drawing(drawing)     # at the study's 0.07 mm the elements are its pixels
    np.testing.assert_array_equal(read_mask(tmp_path / "filled.png"), expected.mask)
    assert out == {"out": str(tmp_path / "filled.png"), "step": expected.step, "size_px": 75.0,
                   "size_mm": pytest.approx(5.25), "closed": True, "hull_used": False,
                   "n_pixels": int(expected.mask.sum())}
    assert main(["annotate", "fill", str(tmp_path / "none.png"), "--out", "x.png"]) == 2
