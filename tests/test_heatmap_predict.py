"""The NYU image + heatmaps families inside ILCscope: `python -m core predict --family
nyu-image-heatmaps --patch-model FILE` on two exams of a small synthetic store (small networks
with seeded weights, the 'demo' config's 512 x 320 windows), checked breast by breast against
the pipeline re-stated by hand (crop, the patch model's heatmaps of the cropped view, the
official draws, channels [image, benign, malignant]); the heatmap cache across runs; the
heatmaps as saliency files; the family guessed from the first conv's channels; the
single-image variant at image level."""
from __future__ import annotations

import json
import random
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from cli import main
from core.errors import InputError
from core.io.images import read_pixels
from core.reports.saliency import saliency_file, saliency_files, saliency_report
from core.saliency import read_saliency
from core.store import open_store
from models.families import FAMILIES, guess_family
from models.inference.heatmaps import produce_heatmaps
from models.inference.predict_windows import (crop_settings, heatmap_settings, predict_windows,
                                              windows_for)
from models.inference.windows import cut_window, draw_windows, prepare_view
from models.networks.nyu_dmv import (CONFIGS, LABELS, ImageBreastModel, SingleImageBreastModel,
                                     build_nyu_dmv, load_nyu_dmv_checkpoint, load_nyu_single_views)
from models.networks.gmic import build_gmic
from models.networks.nyu_patch import PatchConfig, PatchDenseNet121, load_nyu_patch_checkpoint
from tests.test_heatmap_cache import tiny_patch_model

TEST_SET = "two-exams"
FAM = FAMILIES["nyu-image-heatmaps"]
HEAT_DEMO = replace(CONFIGS["demo"], input_channels=3)


def run_cli(db: Path, *args: str) -> tuple[int, dict | None, str]:
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["predict", "--db", str(db), "--test-set", TEST_SET, "--json", *args])
    return code, json.loads(out.getvalue()) if code == 0 else None, err.getvalue()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A small synthetic store with a two-exam test set (annotated ones), the networks' files,
    and the first heatmaps run."""
    from core.demo.build import build_demo

    folder = tmp_path_factory.mktemp("heat")
    db = folder / "store" / "ilcscope.duckdb"
    db.parent.mkdir()
    store = open_store(db)
    build_demo(store, n_exams=6, seed=1, cancer_fraction=0.5, test_fraction=0.5)
    annotated = set(store.select("annotations")["image_id"])
    images = store.images()
    exams = sorted(images.loc[images["image_id"].isin(annotated), "exam_id"].unique())[:2]
    store.write_tables({}, testsets={TEST_SET: "exam=" + ",".join(exams)})
    torch.manual_seed(7)
    model_file = folder / "nyu-heat.p"
    network = build_nyu_dmv(HEAT_DEMO)
    with torch.no_grad():   # heatmap channels that weigh as much as the image (the test sees them)
        network.four_view_resnet.cc.first_conv.weight[:, 1:] *= 300
        network.four_view_resnet.mlo.first_conv.weight[:, 1:] *= 300
    torch.save({"model": network.state_dict()}, model_file)   # the official format
    patch_file, other_patch = folder / "patch.p", folder / "patch-2.p"
    torch.save(tiny_patch_model(1).state_dict(), patch_file)
    torch.save(tiny_patch_model(2).state_dict(), other_patch)
    code, summary, err = run_cli(db, "--model", str(model_file), "--config", "demo",
                                 "--patch-model", str(patch_file), "--name", "nyu-heat")
    assert code == 0, err
    patch = load_nyu_patch_checkpoint(patch_file, None)
    return SimpleNamespace(db=db, exams=exams, model_file=model_file, patch_file=patch_file,
                           other_patch=other_patch, summary=summary,
                           views={e: reference_views(store, e, patch) for e in exams})


def reference_views(store, exam: str, patch_model) -> dict:
    """An exam's views as the pipeline should prepare them, re-stated: crop with the scaled
    settings, the heatmaps of the cropped right-facing view from a fresh Random(0), stacked
    (benign, malignant) as auxiliary channels."""
    windows = windows_for(FAM, CONFIGS["demo"].input_shape)
    iterations, buffer = crop_settings(windows, FAM)
    settings = heatmap_settings(windows, FAM)
    views = {}
    for r in store.images(test_set=TEST_SET).query("exam_id == @exam").itertuples():
        pixels = read_pixels(r.abs_path)
        view = prepare_view(pixels, r.laterality, r.view, windows[r.view], iterations=iterations,
                            buffer=buffer)
        heat = produce_heatmaps(patch_model, view.image, rng=random.Random(0), config=settings)
        views[f"{r.laterality}-{r.view}"] = (replace(view, auxiliary=np.stack(
            [heat.benign, heat.malignant], axis=-1)), heat, r, pixels.shape)
    return views


def test_the_scaled_settings():
    windows = windows_for(FAM, CONFIGS["demo"].input_shape)
    assert windows == {"CC": (512, 320), "MLO": (512, 320)}
    assert crop_settings(windows, FAM) == (19, 10)
    official = heatmap_settings(windows_for(FAM, None), FAM)
    assert (official.patch_size, official.stride, official.batch_size) == (256, 70, 100)
    tiny = heatmap_settings(windows, FAM)
    assert (tiny.patch_size, tiny.stride) == (49, 13)         # 256 and 70 x 512 / 2677


def test_each_breast_is_scored_from_the_image_and_its_heatmaps(world):
    store = open_store(world.db, read_only=True)
    images = store.images(test_set=TEST_SET)
    assert world.summary["heatmaps"]["computed"] == len(images) == 8
    assert world.summary["heatmaps"]["cached"] == 0 and world.summary["heatmaps"]["failed"] == 0
    assert world.summary["n_predicted"] == len(images) and world.summary["n_failed"] == 0
    assert store.models().set_index("model").at["nyu-heat", "kind"] == "nyu-image-heatmaps"
    preds = store.predictions(models=["nyu-heat"], level="breast", test_set=TEST_SET)
    assert len(preds) == 4
    model = load_nyu_dmv_checkpoint(world.model_file, HEAT_DEMO)
    windows = windows_for(FAM, CONFIGS["demo"].input_shape)
    rng = np.random.RandomState(0)                    # one generator, exams in order, 1 draw
    for exam in world.exams:
        views = {v: p for v, (p, *_) in world.views[exam].items()}
        cut = draw_windows(views, windows, rng, 1)

        def forward(order):
            x = {v: torch.from_numpy(np.concatenate([w[0].image[None],
                                                     np.moveaxis(w[0].auxiliary, -1, 0)[order]]))[None]
                 for v, w in cut.items()}
            with torch.inference_mode():
                return dict(zip(LABELS, model(x)["breast_probs"][0].tolist()))
        want, swapped = forward([0, 1]), forward([1, 0])
        got = preds[preds["exam_id"] == exam].set_index("laterality")
        for side, word in (("L", "left"), ("R", "right")):
            assert got.at[side, "score"] == pytest.approx(want[f"{word}_malignant"], abs=1e-4)
            assert got.at[side, "benign"] == pytest.approx(want[f"{word}_benign"], abs=1e-4)
        # the test can tell the channel order: benign and malignant swapped score differently
        assert max(abs(want[k] - swapped[k]) for k in LABELS) > 1e-3


def test_the_heatmaps_are_the_models_saliency_files(world):
    store = open_store(world.db, read_only=True)
    ids = store.images(test_set=TEST_SET)["image_id"]
    files = saliency_files(store, "nyu-heat", ids)
    assert sorted(files.index) == sorted(ids) and files["patch_boxes"].isna().all()
    for view, heat, row, shape in world.views[world.exams[0]].values():
        stored = read_saliency(store.files_dir / saliency_file("nyu-heat", row.image_id))
        assert files.at[row.image_id, "saliency_path"] == saliency_file("nyu-heat", row.image_id).as_posix()
        h, w = heat.malignant.shape
        cells = np.pad(heat.malignant, ((0, -h % 8), (0, -w % 8)), constant_values=np.nan)
        want = np.nanmean(cells.reshape(-(-h // 8), 8, -(-w // 8), 8), axis=(1, 3))
        np.testing.assert_allclose(stored.malignant, want, atol=2e-3)      # float16 cells
        assert stored.patch_boxes.shape == (0, 4)
        on_image = stored.to_original("benign")
        top, bottom, left, right = view.crop.box
        assert on_image.shape == shape and on_image[:top].max(initial=0) == 0
        inside = on_image[top:bottom, left:right]
        inside = inside[:, ::-1] if view.points == "left" else inside   # back to facing right
        assert abs(float(inside.mean()) - float(heat.benign.mean())) < 5e-3
    report = saliency_report(store, test_set=TEST_SET, model="nyu-heat")
    assert len(report.per_image) >= 1 and report.per_image["patch_hit"].isna().all()


def test_a_second_run_reads_every_heatmap_from_the_cache(world):
    entries = sorted((open_store(world.db, read_only=True).files_dir / "heatmaps").rglob("*.npz"))
    assert len(entries) == 8
    before = {p: p.stat().st_mtime_ns for p in entries}
    code, summary, err = run_cli(world.db, "--model", str(world.model_file), "--config", "demo",
                                 "--patch-model", str(world.patch_file), "--name", "nyu-heat-2")
    assert code == 0, err
    assert summary["heatmaps"]["computed"] == 0 and summary["heatmaps"]["cached"] == 8
    assert {p: p.stat().st_mtime_ns for p in entries} == before
    store = open_store(world.db, read_only=True)
    first = store.predictions(models=["nyu-heat"], level="breast", test_set=TEST_SET)
    second = store.predictions(models=["nyu-heat-2"], level="breast", test_set=TEST_SET)
    np.testing.assert_array_equal(first["score"].to_numpy(), second["score"].to_numpy())


def test_another_patch_model_makes_new_heatmaps_with_progress(world):
    store = open_store(world.db)
    calls = []
    summary = predict_windows(store, fam=FAM, checkpoint=world.model_file, name="nyu-heat-3",
                              test_set=TEST_SET, config="demo", patch_model=world.other_patch,
                              device="cpu", progress=lambda d, t, m: calls.append((d, t, m)))
    assert summary.heatmaps["computed"] == 8 and summary.heatmaps["cached"] == 0
    steps = [c for c in calls if c[2] == "heatmaps"]
    assert [d for d, _, _ in steps] == list(range(1, 9)) and {t for _, t, _ in steps} == {8}
    assert any("patches" in m for _, _, m in calls)
    a = store.predictions(models=["nyu-heat"], level="breast", test_set=TEST_SET)["score"]
    b = store.predictions(models=["nyu-heat-3"], level="breast", test_set=TEST_SET)["score"]
    assert not np.allclose(a.to_numpy(), b.to_numpy())


def test_the_patch_model_flag_is_required_exactly_where_heatmaps_are_read(world, tmp_path):
    code, _, err = run_cli(world.db, "--model", str(world.model_file), "--config", "demo",
                           "--name", "x")
    assert code == 2 and "--patch-model" in err and len(err.strip().splitlines()) == 1
    image_only, gmic = tmp_path / "nyu-image.p", tmp_path / "gmic.pt"
    torch.save({"model": build_nyu_dmv("demo").state_dict()}, image_only)
    torch.save({"model": build_gmic("demo").state_dict(), "config": "demo"}, gmic)
    for model in (image_only, gmic):
        code, _, err = run_cli(world.db, "--model", str(model), "--patch-model",
                               str(world.patch_file), "--name", "y")
        assert code == 2 and "reads no heatmaps" in err, err
    with pytest.raises(InputError, match="cannot read 49 px patches"):
        deep = tmp_path / "deep.p"   # six halvings: 49 px -> 25, 13, 6, 3, 1, 0
        torch.save(PatchDenseNet121(PatchConfig(growth_rate=4, block_config=(1,) * 5,
                                                num_init_features=8)).state_dict(), deep)
        predict_windows(open_store(world.db), fam=FAM, checkpoint=world.model_file, name="z",
                        test_set=TEST_SET, config="demo", patch_model=deep, device="cpu")


def test_the_single_image_model_scores_each_image(world):
    store = open_store(world.db)
    fam = FAMILIES["nyu-single-heatmaps"]
    path = world.db.parent / "image-wise.p"
    torch.manual_seed(11)
    torch.save({"model": ImageBreastModel(HEAT_DEMO).state_dict()}, path)
    assert guess_family(path) is fam
    summary = predict_windows(store, fam=fam, checkpoint=path, name="nyu-single", draws=0,
                              test_set=TEST_SET, config="demo", patch_model=world.patch_file,
                              device="cpu")
    assert summary.heatmaps["computed"] == 0 and summary.n_predicted == 8
    preds = store.select("predictions", model="nyu-single", level="image").set_index("image_id")
    model = load_nyu_single_views(path, HEAT_DEMO)
    windows = windows_for(fam, CONFIGS["demo"].input_shape)
    for view, (prepared, _, row, _) in world.views[world.exams[1]].items():
        w = cut_window(prepared.image, row.view, prepared.centre, windows[row.view],
                       np.random.RandomState(0), auxiliary=prepared.auxiliary)
        x = torch.from_numpy(np.concatenate([w.image[None], np.moveaxis(w.auxiliary, -1, 0)]))[None]
        with torch.inference_mode():
            benign, malignant = model(x, [view])["probs"][0].tolist()
        assert preds.at[row.image_id, "malignant"] == pytest.approx(malignant, abs=1e-4)
        assert preds.at[row.image_id, "benign"] == pytest.approx(benign, abs=1e-4)
        assert preds.at[row.image_id, "saliency_path"] == saliency_file("nyu-single", row.image_id).as_posix()


@pytest.mark.parametrize("channels", [1, 3])
def test_the_family_is_guessed_from_the_first_convs_channels(tmp_path, channels):
    cfg = replace(CONFIGS["demo"], input_channels=channels)
    heat = "-heatmaps" if channels == 3 else ""
    files = {f"nyu-image{heat}": {"model": build_nyu_dmv(cfg).state_dict()},
             f"nyu-single{heat}": {"model": ImageBreastModel(cfg).state_dict()}}
    single = SingleImageBreastModel(cfg).state_dict()
    files[f"nyu-single{heat}-state"] = {f"module.{k}": v for k, v in single.items()}
    for name, content in files.items():
        torch.save(content, tmp_path / "f.p")
        assert guess_family(tmp_path / "f.p").name == name.removesuffix("-state")
    odd = {k: (torch.zeros(v.shape[0], 2, *v.shape[2:]) if k.endswith("first_conv.weight") else v)
           for k, v in build_nyu_dmv(cfg).state_dict().items()}
    torch.save(odd, tmp_path / "odd.p")
    with pytest.raises(InputError, match="first conv reads 2 channels") as err:
        guess_family(tmp_path / "odd.p")
    assert "\n" not in str(err.value)
