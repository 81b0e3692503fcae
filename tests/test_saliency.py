"""Saliency vs segmentation: maps back to the image (against torch), the metrics against
brute-force and hand-computed answers, the paired tests by hand, the report and its CLI."""
from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi

from cli import main
from core.errors import InputError
from core.saliency import (DEFAULT_THRESHOLDS, SaliencyGeometry, dice_at_thresholds,
                           read_saliency, saliency_metrics, saliency_to_original)
from core.stats import mcnemar_test, wilcoxon_test
from core.store import open_store
from tests.conftest import copy_store


# --- maps back to original coordinates ---------------------------------------------------------

@pytest.mark.parametrize("grid,box", [((46, 30), (333, 256)), ((8, 5), (512, 320)),
                                      ((7, 3), (70, 21)), ((5, 6), (3, 4)), ((4, 4), (8, 8))])
@pytest.mark.parametrize("flipped", [False, True])
def test_mapping_equals_torch_interpolate(grid, box, flipped):
    """The numpy mapping == what models/inference/preprocess did with torch (bilinear to float32
    rounding, legacy nearest exactly), on up- and down-sampling and odd sizes."""
    rng = np.random.default_rng(sum(grid) + sum(box))
    g = rng.random((2, *grid)).astype(np.float32)
    h, w = box
    geometry = SaliencyGeometry((h + 9, w + 5), (4, 3, h, w), flipped, (h, w), (1.0, 1.0))
    for mode in ("bilinear", "nearest"):
        ours = saliency_to_original(g, geometry, mode=mode)
        kwargs = {"align_corners": False} if mode == "bilinear" else {}
        ref = F.interpolate(torch.from_numpy(g)[None], size=(h, w), mode=mode, **kwargs)[0]
        ref = (ref.flip(-1) if flipped else ref).numpy()
        expected = np.zeros_like(ours)
        expected[:, 4:4 + h, 3:3 + w] = ref
        np.testing.assert_allclose(ours, expected, atol=5e-6 if mode == "bilinear" else 0)
        np.testing.assert_array_equal(saliency_to_original(g[1], geometry, mode=mode), ours[1])


@pytest.mark.parametrize("flipped", [False, True])
def test_a_point_round_trips_through_crop_flip_and_resize(flipped):
    """Send original pixels forward into the model input (crop, mirror, halve), light that input
    cell, map back: the original pixel is lit, and exactly its 2 x 2 block."""
    r0, c0, h, w = 30, 17, 120, 80
    geometry = SaliencyGeometry((200, 150), (r0, c0, h, w), flipped, (60, 40), (0.5, 0.5))
    rng = np.random.default_rng(3)
    for row, col in zip(rng.integers(r0, r0 + h, 20), rng.integers(c0, c0 + w, 20)):
        box_col = col - c0 if not flipped else w - 1 - (col - c0)
        grid = np.zeros((60, 40), np.float32)
        grid[int((row - r0) * 0.5), int(box_col * 0.5)] = 1
        back = saliency_to_original(grid, geometry, mode="nearest")
        assert back[row, col] == 1 and back.sum() == 4
        rows, cols = np.nonzero(back)
        assert rows.max() - rows.min() == 1 and cols.max() - cols.min() == 1


def test_preprocessed_geometry_maps_like_the_stored_file(demo_store_path):
    """A stored file's geometry == the preprocessing's, and the map it gives is the one
    models.inference.preprocess gives for the same grid."""
    from core.io.images import read_pixels
    from models.networks.gmic import CONFIGS
    from models.inference.preprocess import preprocess_image

    store = open_store(demo_store_path, read_only=True)
    row = store.select("predictions", model="gmic-demo", level="image").iloc[0]
    saved = read_saliency(store.files_dir / row["saliency_path"])
    image = store.image(row["image_id"])
    pre = preprocess_image(read_pixels(image["abs_path"]), CONFIGS["demo"].input_shape,
                           laterality=image["laterality"])
    assert pre.geometry == saved.geometry
    np.testing.assert_array_equal(saved.to_original(), pre.saliency_to_original(saved.malignant))


def test_format_2_round_trips_and_format_1_still_reads(tmp_path):
    """Hand-written files: format 2 carries boxes and weights; format 1 reads without them."""
    common = dict(model=np.str_("m"), image_id=np.str_("i"), malignant=np.ones((2, 2), np.float16),
                  benign=np.zeros((2, 2), np.float16), input_shape=np.array([4, 4]),
                  original_shape=np.array([8, 8]), crop_box=np.array([0, 0, 8, 8]),
                  flipped=np.bool_(False), scale=np.array([0.5, 0.5]))
    np.savez_compressed(tmp_path / "one.npz", format=np.int64(1), **common)
    old = read_saliency(tmp_path / "one.npz")
    assert old.format == 1 and old.patch_boxes is None and old.patch_attention is None
    boxes = np.array([[0, 0, 2, 2], [4, 4, 3, 3.5]])
    np.savez_compressed(tmp_path / "two.npz", format=np.int64(2), patch_boxes=boxes,
                        patch_attention=np.array([0.25, 0.75]), **common)
    new = read_saliency(tmp_path / "two.npz")
    assert new.format == 2 and new.patch_boxes.tolist() == boxes.tolist()
    assert new.patch_attention.tolist() == [0.25, 0.75]
    mask = np.zeros((8, 8), bool)
    mask[5, 5] = True                      # inside box 2 only: attention 0.75 by hand
    m = saliency_metrics(new.to_original(), mask, spacing_mm=None, patch_boxes=new.patch_boxes,
                         attention=new.patch_attention)
    assert m["n_patches_hit"] == 1 and m["patch_attention"] == 0.75
    np.savez_compressed(tmp_path / "bad.npz", format=np.int64(2), patch_boxes=boxes,
                        patch_attention=np.array([1.0]), **common)
    with pytest.raises(InputError, match="1 attention weights for 2 patch boxes"):
        read_saliency(tmp_path / "bad.npz")
    np.savez_compressed(tmp_path / "three.npz", format=np.int64(3), **common)
    with pytest.raises(InputError, match="reads formats 1, 2"):
        read_saliency(tmp_path / "three.npz")


def test_reading_a_saliency_file_does_not_import_torch(demo_store_path, tmp_path):
    import subprocess
    import sys

    store = open_store(demo_store_path, read_only=True)
    path = store.files_dir / store.select("predictions", model="gmic-demo")["saliency_path"].iloc[0]
    code = ("import sys; from core.saliency import read_saliency; "
            f"read_saliency({str(path)!r}).to_original(); "
            "import core.reports.saliency, core.annotations; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --- per-image metrics -------------------------------------------------------------------------

def loop_dice(values, mask, thresholds):
    """The straightforward way: one pass over the image per threshold."""
    out = []
    for t in thresholds:
        pred = values >= t
        out.append(2 * np.logical_and(pred, mask).sum() / (pred.sum() + mask.sum()))
    return np.array(out)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dice_sweep_equals_a_per_threshold_loop(seed, dtype):
    """Sort once == the loop, with ties and values exactly at the thresholds (quantised maps)."""
    rng = np.random.default_rng(seed)
    shape = tuple(rng.integers(5, 60, 2))
    values = rng.random(shape)
    if seed % 2:
        values = np.round(values * 20) / 20            # many pixels exactly on a threshold
    values = values.astype(dtype)
    mask = rng.random(shape) < rng.uniform(0.02, 0.5)
    mask[0, 0] = True
    for thresholds in (DEFAULT_THRESHOLDS, np.linspace(-0.1, 1.1, 37)):
        expected = loop_dice(values, mask, thresholds)
        np.testing.assert_allclose(dice_at_thresholds(values, mask, thresholds), expected,
                                   rtol=1e-12, atol=0)
    metrics = saliency_metrics(values, mask, spacing_mm=0.1)
    expected = loop_dice(values, mask, DEFAULT_THRESHOLDS)
    assert metrics["best_dice"] == expected.max()
    assert metrics["best_threshold"] == DEFAULT_THRESHOLDS[np.argmax(expected)]


def sorted_rank(values, mask):
    """Relevance rank from one full sort, ties at the cut-off shared in proportion."""
    ordered, in_mask = np.sort(values.ravel()), np.sort(values[mask])
    k = in_mask.size
    cut = ordered[-k]
    above_all = np.sum(ordered > cut)
    tied_all, tied_in = np.sum(ordered == cut), np.sum(in_mask == cut)
    return (np.sum(in_mask > cut) + (k - above_all) * tied_in / tied_all) / k


@pytest.mark.parametrize("seed", range(8))
def test_block_counts_equal_the_loop_on_smooth_maps_at_block_scale(seed):
    """Upsampled grids (whole 32 x 32 blocks above, below and across thresholds, ragged edge
    strips), pixels exactly on a threshold and one float32 step either side of one."""
    rng = np.random.default_rng(seed)
    shape = (int(rng.integers(60, 200)), int(rng.integers(40, 160)))
    grid = rng.random((int(rng.integers(3, 9)), int(rng.integers(3, 9)))).astype(np.float32)
    geometry = SaliencyGeometry(shape, (0, 0, *shape), False, shape, (1.0, 1.0))
    values = saliency_to_original(grid, geometry)
    picks = rng.integers(0, values.size, 300)
    t = DEFAULT_THRESHOLDS[rng.integers(0, 21, 300)].astype(np.float32)
    step = rng.integers(-1, 2, 300)                 # below, on, above (as float32) a threshold
    values.ravel()[picks] = np.where(step < 0, np.nextafter(t, np.float32(-1)),
                                     np.where(step > 0, np.nextafter(t, np.float32(2)), t))
    if seed % 2:
        values = (np.round(values * 20) / 20).astype(np.float32)   # plateaus on thresholds
    if seed == 2:
        values -= 2                                  # every pixel below every threshold
    mask = np.zeros(shape, bool)
    r, c = rng.integers(0, shape[0] - 20), rng.integers(0, shape[1] - 20)
    mask[r:r + int(rng.integers(1, 40)), c:c + int(rng.integers(1, 40))] = True
    for thresholds in (DEFAULT_THRESHOLDS, np.linspace(-2.5, 1.1, 50)):
        np.testing.assert_array_equal(dice_at_thresholds(values, mask, thresholds),
                                      loop_dice(values, mask, thresholds))
    m = saliency_metrics(values, mask, spacing_mm=None)
    assert m["best_dice"] == loop_dice(values, mask, DEFAULT_THRESHOLDS).max()
    assert m["relevance_rank"] == pytest.approx(sorted_rank(values, mask), abs=1e-12)
    assert (m["argmax_row"], m["argmax_col"]) == np.unravel_index(np.argmax(values), shape)


def test_brute_force_pointing_distance_mass_and_rank():
    """Untied maps: arg-max, EDT distance, mass and the top-|mask| share by plain means."""
    rng = np.random.default_rng(7)
    for _ in range(10):
        values = rng.random((40, 30))
        mask = np.zeros((40, 30), bool)
        r, c = rng.integers(0, 30, 2)
        mask[r:r + rng.integers(2, 10), c:c + rng.integers(2, 10)] = True
        m = saliency_metrics(values, mask, spacing_mm=0.07)
        row, col = np.unravel_index(np.argmax(values), values.shape)
        assert (m["argmax_row"], m["argmax_col"]) == (row, col)
        assert m["hit"] == mask[row, col]
        distance = ndi.distance_transform_edt(~mask)[row, col]
        assert m["distance_px"] == pytest.approx(distance)
        assert m["distance_mm"] == pytest.approx(distance * 0.07)
        assert m["relevance_mass"] == pytest.approx(values[mask].sum() / values.sum())
        top = np.argsort(values.ravel())[::-1][:mask.sum()]
        assert m["relevance_rank"] == pytest.approx(mask.ravel()[top].mean())


def test_known_answers_by_hand():
    mask = np.zeros((10, 10), bool)
    mask[2:4, 2:4] = True                                     # 4 pixels
    # the mask itself: perfect everywhere
    m = saliency_metrics(mask.astype(float), mask, spacing_mm=0.5)
    assert m["best_dice"] == 1 and m["best_threshold"] == 0.05 and m["dice"][0] == 8 / 104
    assert m["hit"] and m["distance_mm"] == 0 and m["relevance_mass"] == 1
    assert m["relevance_rank"] == 1 and m["n_mask"] == 4
    # a flat map: Dice 2*4/(4+100) at every t <= 0.3, mass 4/100, rank 4/100 (ties shared)
    flat = np.full((10, 10), 0.3)
    m = saliency_metrics(flat, mask, spacing_mm=None)
    np.testing.assert_allclose(m["dice"], np.where(DEFAULT_THRESHOLDS <= 0.3, 8 / 104, 0))
    assert m["relevance_mass"] == pytest.approx(0.04) and m["relevance_rank"] == pytest.approx(0.04)
    assert not m["hit"] and (m["argmax_row"], m["argmax_col"]) == (0, 0)  # first maximum
    assert m["distance_px"] == pytest.approx(math.hypot(2, 2)) and math.isnan(m["distance_mm"])
    # a peak at (7, 9): nearest mask pixel (3, 3) is sqrt(16 + 36) away; half the map in the mask
    peak = np.zeros((10, 10))
    peak[7, 9], peak[2, 2] = 1.0, 0.5
    peak[mask] += 0.25
    m = saliency_metrics(peak, mask, spacing_mm=0.1, thresholds=[0, 0.5, 1])
    assert m["distance_mm"] == pytest.approx(0.1 * math.sqrt(52))
    assert m["relevance_mass"] == pytest.approx(1.5 / 2.5)
    np.testing.assert_allclose(m["dice"], [8 / 104, 2 / 6, 0])   # t=0.5: (2,2) and (7,9)
    assert m["relevance_rank"] == pytest.approx(3 / 4)            # top 4: (7,9) + 3 mask px


def test_patches_overlap_and_attention():
    mask = np.zeros((50, 50), bool)
    mask[20:30, 20:30] = True
    boxes = [[0, 0, 10, 10], [29.5, 29.5, 5, 5], [30, 30, 5, 5], [15, 25, 5.2, 3]]
    m = saliency_metrics(np.random.default_rng(0).random((50, 50)), mask, spacing_mm=1,
                         patch_boxes=boxes, attention=[0.1, 0.2, 0.3, 0.4])
    # box 1 covers half of pixel (29, 29); box 2 starts at the mask's far edge; box 3 reaches row 20
    assert m["patch_hit"] and m["n_patches_hit"] == 2
    assert m["patch_attention"] == pytest.approx(0.6)
    none = saliency_metrics(np.ones((50, 50)), mask, spacing_mm=1, patch_boxes=boxes[:1])
    assert none["patch_hit"] is False and math.isnan(none["patch_attention"])


def test_metric_input_errors():
    mask = np.ones((4, 4), bool)
    with pytest.raises(InputError, match="mask is empty"):
        saliency_metrics(np.ones((4, 4)), np.zeros((4, 4)), spacing_mm=1)
    with pytest.raises(InputError, match="mask has shape"):
        saliency_metrics(np.ones((4, 5)), mask, spacing_mm=1)
    with pytest.raises(InputError, match="NaN"):
        saliency_metrics(np.full((4, 4), np.nan), mask, spacing_mm=1)
    with pytest.raises(InputError, match="increasing"):
        saliency_metrics(np.ones((4, 4)), mask, spacing_mm=1, thresholds=[0.5, 0.1])
    with pytest.raises(InputError, match="spacing_mm"):
        saliency_metrics(np.ones((4, 4)), mask, spacing_mm=-1)
    with pytest.raises(InputError, match="one weight per box"):
        saliency_metrics(np.ones((4, 4)), mask, spacing_mm=1, patch_boxes=[[0, 0, 1, 1]],
                         attention=[0.5, 0.5])


# --- paired tests by hand ----------------------------------------------------------------------

def test_mcnemar_exact_and_chi2_by_hand():
    a = [1] * 2 + [0] * 8 + [1] * 5          # b = 2 (a only), c = 8 (b only), 5 both
    b = [0] * 2 + [1] * 8 + [1] * 5
    r = mcnemar_test(a, b)
    assert (r.b, r.c, r.method) == (2, 8, "exact")
    assert r.p_value == pytest.approx(2 * (1 + 10 + 45) / 1024)
    big = mcnemar_test([1] * 30 + [0] * 10, [0] * 30 + [1] * 10)
    assert big.method == "chi2" and big.statistic == pytest.approx(19 ** 2 / 40)
    assert big.p_value == pytest.approx(math.erfc(math.sqrt(19 ** 2 / 40 / 2)))
    assert mcnemar_test([1, 0], [1, 0]).p_value == 1.0


def brute_wilcoxon_p(d):
    """Exact two-sided p: every sign pattern of the ranks is equally likely under H0."""
    ranks = pd.Series(np.abs(d)).rank().to_numpy()
    observed = min(ranks[d > 0].sum(), ranks[d < 0].sum())
    sums = [sum(r for r, s in zip(ranks, signs) if s) for signs in
            itertools.product((0, 1), repeat=len(d))]
    return min(1.0, 2 * np.mean([s <= observed + 1e-9 for s in sums]))


@pytest.mark.parametrize("seed", range(5))
def test_wilcoxon_against_sign_enumeration(seed):
    rng = np.random.default_rng(seed)
    a, b = rng.random(9), rng.random(9) + 0.1 * seed
    r = wilcoxon_test(a, b)
    assert r.p_value == pytest.approx(brute_wilcoxon_p(a - b))
    assert r.median_difference == pytest.approx(np.median(a - b))
    assert wilcoxon_test([1, 2, 3, 4, 5.0], [0] * 5).p_value == pytest.approx(2 / 32)
    assert math.isnan(wilcoxon_test([1, 2], [1, 2]).p_value)


# --- the report over a store -------------------------------------------------------------------

@pytest.fixture(scope="module")
def oracle_store(demo_store_path, tmp_path_factory):
    """The demo store plus model 'oracle' whose malignant map is each annotation itself (a
    full-resolution grid, identity geometry): Dice 1, every maximum inside, all mass inside."""
    path = copy_store(demo_store_path, tmp_path_factory.mktemp("oracle"))
    store = open_store(path)
    ann = store.latest_annotations(test_set="test-all")
    images = store.images(test_set="test-all").set_index("image_id")
    rows = []
    for image_id, mask_path in zip(ann["image_id"], ann["mask_path"]):
        mask = store.load_mask(mask_path)
        rel = f"saliency/oracle/{image_id.replace('/', '_')}.npz"
        (store.files_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(store.files_dir / rel, format=np.int64(1), model=np.str_("oracle"),
                            image_id=np.str_(image_id), malignant=mask.astype(np.float16),
                            benign=np.zeros(mask.shape, np.float16),
                            input_shape=np.array(mask.shape), original_shape=np.array(mask.shape),
                            crop_box=np.array([0, 0, *mask.shape]), flipped=np.bool_(False),
                            scale=np.array([1.0, 1.0]))
        rows.append({"model": "oracle", "level": "image", "case_id": image_id,
                     "exam_id": images.at[image_id, "exam_id"], "image_id": image_id,
                     "malignant": 0.9, "benign": 0.1, "saliency_path": rel,
                     "patch_boxes": json.dumps([[0, 0, 8, 8]])})
    store.write_tables({"models": pd.DataFrame([{"model": "oracle", "kind": "external"}]),
                        "predictions": pd.DataFrame(rows)})
    return path


def test_report_numbers_equal_direct_metrics_and_known_answers(oracle_store):
    from core.reports.saliency import saliency_report

    store = open_store(oracle_store, read_only=True)
    rep = saliency_report(store, test_set="test-all", model="gmic-demo", compare="oracle")
    demo = rep.per_image[rep.per_image["model"] == "gmic-demo"].set_index("image_id")
    oracle = rep.per_image[rep.per_image["model"] == "oracle"].set_index("image_id")
    n_annotated = len(store.latest_annotations(test_set="test-all"))
    assert len(demo) == len(oracle) == n_annotated > 3
    assert (oracle["best_dice"] == 1).all() and oracle["hit"].all()
    assert (oracle["relevance_mass"] == 1).all() and (oracle["relevance_rank"] == 1).all()
    preds = store.select("predictions", model="gmic-demo").set_index("image_id")
    for image_id, row in demo.iterrows():                 # independent: the plain loop
        mask = store.load_mask(store.latest_annotations().set_index("image_id")
                               .at[image_id, "mask_path"])
        values = read_saliency(store.files_dir / preds.at[image_id, "saliency_path"]).to_original()
        assert row["best_dice"] == pytest.approx(loop_dice(values, mask, DEFAULT_THRESHOLDS).max())
        flat_max = np.unravel_index(np.argmax(values), values.shape)
        assert row["hit"] == mask[flat_max]
        # Format 2 (predict now): attention on the patches whose pixel span meets the mask.
        saved = read_saliency(store.files_dir / preds.at[image_id, "saliency_path"])
        touched = [mask[int(np.floor(r)):int(np.ceil(r + h)), int(np.floor(c)):int(np.ceil(c + w))]
                   .any() and h > 0 and w > 0 for r, c, h, w in saved.patch_boxes]
        assert row["patch_attention"] == pytest.approx(saved.patch_attention[touched].sum())
    assert demo["patch_attention"].notna().all() and oracle["patch_attention"].isna().all()
    assert rep.summary["gmic-demo"]["mean_patch_attention"] == pytest.approx(
        demo["patch_attention"].mean())
    s = rep.summary["gmic-demo"]
    hits = int(demo["hit"].sum())
    assert s["n_images"] == len(demo) and s["n_hits"] == hits
    assert s["mean_best_dice"] == pytest.approx(demo["best_dice"].mean())
    assert s["median_best_dice"] == pytest.approx(demo["best_dice"].median())
    p = rep.paired
    assert p["n_images"] == len(demo)
    assert (p["hit"]["b"], p["hit"]["c"]) == (0, len(demo) - hits)   # oracle never misses
    assert p["best_dice"]["median_difference"] == pytest.approx(
        np.median(demo["best_dice"] - 1))
    assert rep.dice_curves.shape == (2 * len(demo), len(DEFAULT_THRESHOLDS))
    assert set(rep.by_histology["histology"]) == set(demo.index.map(
        store.cases(level="image").set_index("case_id")["histology"]))


def test_report_cli_json_equals_the_core_function(oracle_store, capsys):
    from core.reports.saliency import saliency_report

    store = open_store(oracle_store, read_only=True)
    expected = saliency_report(store, test_set="test-all", model="gmic-demo", compare="oracle")
    code = main(["report", "saliency", "--db", str(oracle_store), "--test-set", "test-all",
                 "--model", "gmic-demo", "--compare", "oracle", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    for model in ("gmic-demo", "oracle"):
        for key, value in expected.summary[model].items():
            got = math.nan if out["summary"][model][key] is None else out["summary"][model][key]
            assert got == pytest.approx(value, nan_ok=True), key   # JSON writes NaN as null
    assert out["paired"]["hit"] == expected.paired["hit"]
    assert out["paired"]["best_dice"]["p_value"] == pytest.approx(
        expected.paired["best_dice"]["p_value"])
    assert out["n_images"] == {"gmic-demo": expected.summary["gmic-demo"]["n_images"],
                               "oracle": expected.summary["oracle"]["n_images"]}


def test_report_errors_are_one_line(oracle_store, capsys):
    code = main(["report", "saliency", "--db", str(oracle_store), "--test-set", "test-all",
                 "--model", "nope"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "model 'nope'" in err
    code = main(["report", "saliency", "--db", str(oracle_store), "--test-set", "test-all",
                 "--model", "oracle", "--compare", "oracle"])
    assert code == 2 and "--compare is the same model" in capsys.readouterr().err
