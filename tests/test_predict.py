"""Batch inference: predictions, saliency files, patch boxes, resumability, ensembles, the CLI."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from tests.conftest import copy_store
from cli import main
from core.errors import InputError
from core.io.images import read_pixels
from core.stats import roc_auc
from core.store import open_store
from models.networks.gmic import CONFIGS, build_gmic, load_gmic_checkpoint
from core.demo.cohort import generate_cohort
from models.demo.models import DEMO_GMIC
from models.inference.predict import (DEMO_CHECKPOINT, checkpoint_config, predict_test_set, read_saliency,
                            resolve_model)
from models.demo.train_gmic import image_labels
from models.inference.preprocess import preprocess_image

TEST_SET = "test-all"


@pytest.fixture
def store_path(demo_store_path, tmp_path) -> Path:
    """A private copy of the shared demo store (file + files folder): tests write to it."""
    return copy_store(demo_store_path, tmp_path)


def _fresh_checkpoint(folder: Path, name: str, seed: int) -> Path:
    """A 'demo'-config network with seeded fresh weights, saved as train_demo saves one."""
    torch.manual_seed(seed)
    model = build_gmic("demo").eval()
    path = folder / name
    torch.save({"state_dict": model.state_dict(), "config": "demo"}, path)
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """The network the tests run (inference is tested, not the quality of the weights)."""
    return _fresh_checkpoint(tmp_path_factory.mktemp("ckpt"), "main.pt", 0)


@pytest.fixture(scope="module")
def other_checkpoint(tmp_path_factory) -> Path:
    """A second 'demo' network (other fresh weights) for ensembles."""
    return _fresh_checkpoint(tmp_path_factory.mktemp("ckpt"), "other.pt", 123)


def _run(store, checkpoints, name, **kw):
    torch.set_num_threads(2)
    return predict_test_set(store, checkpoints=checkpoints, name=name, test_set=TEST_SET,
                            batch_size=kw.pop("batch_size", 8), **kw)


def _stored(store, name) -> pd.DataFrame:
    return store._df("SELECT * FROM predictions WHERE model = ? ORDER BY case_id", [name]) \
        .set_index("case_id")


def test_predictions_match_a_plain_forward_pass(checkpoint, store_path):
    """Batched, prefetched, BN-folded inference == the unmodified network on one image."""
    store = open_store(store_path)
    summary = _run(store, [checkpoint], "g")
    images = store.images(test_set=TEST_SET).set_index("image_id")
    assert summary.n_predicted == summary.n_images == len(images) > 0
    assert summary.configs == ["demo"] and summary.n_no_pixels == summary.n_failed == 0
    rows = _stored(store, "g")
    assert set(rows.index) == set(images.index)
    reference = load_gmic_checkpoint(checkpoint, "demo")
    cfg = CONFIGS["demo"]
    for image_id in list(images.index[:6]):
        img = images.loc[image_id]
        pixels = read_pixels(img.abs_path)
        pre = preprocess_image(pixels, cfg.input_shape, laterality=img.laterality)
        with torch.no_grad():
            out = reference(pre.image[None])
        row = rows.loc[image_id]
        assert row.malignant == pytest.approx(float(out["y_fusion"][0, 1]), abs=1e-5)
        assert row.benign == pytest.approx(float(out["y_fusion"][0, 0]), abs=1e-5)
        # Saliency file: reloads, raw grid == the network's (float16), maps back to the image.
        saved = read_saliency(store.files_dir / row.saliency_path)
        assert saved.image_id == image_id and saved.model == "g"
        np.testing.assert_allclose(saved.malignant, out["saliency_map"][0, 1].numpy(), atol=1e-3)
        np.testing.assert_allclose(saved.benign, out["saliency_map"][0, 0].numpy(), atol=1e-3)
        assert saved.geometry.crop_box == pre.crop_box and saved.geometry.flipped == pre.flipped
        back = saved.to_original()
        assert back.shape == pixels.shape == (img.height, img.width)
        np.testing.assert_allclose(back, pre.saliency_to_original(saved.malignant), atol=1e-6)
        # Patch boxes: K per image, inside the breast box (hence the image), = the network's.
        boxes = np.array(json.loads(row.patch_boxes))
        assert boxes.shape == (cfg.num_patches, 4)
        r0, c0, h, w = pre.crop_box
        assert (boxes[:, :2] >= [r0, c0]).all() and (boxes[:, 2:] >= 0).all()
        assert (boxes[:, 0] + boxes[:, 2] <= r0 + h + 1e-9).all()
        assert (boxes[:, 1] + boxes[:, 3] <= c0 + w + 1e-9).all()
        expected = pre.boxes_to_original(out["patch_locations"][0], cfg.crop_shape)
        inside = ((expected[:, :2] >= [r0, c0]).all(1)
                  & (expected[:, 0] + expected[:, 2] <= r0 + h)
                  & (expected[:, 1] + expected[:, 3] <= c0 + w))
        np.testing.assert_allclose(boxes[inside], expected[inside], atol=0.01)
        # Format 2: the same boxes in the file, each with the network's attention weight.
        assert saved.format == 2
        np.testing.assert_allclose(saved.patch_boxes, boxes, atol=0.005)
        np.testing.assert_allclose(saved.patch_attention, out["patch_attns"][0].numpy(),
                                   atol=1e-5)
    models = store.models().set_index("model")
    assert models.loc["g", "kind"] == "gmic" and models.loc["g", "checkpoint"].endswith("main.pt")


def test_resumable_in_chunks(checkpoint, store_path):
    store = open_store(store_path)
    n = len(store.images(test_set=TEST_SET))
    calls = []

    def stop_after_two_chunks(done, total, message):
        calls.append(done)
        if done >= 16:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _run(store, [checkpoint], "r", batch_size=8, chunk_size=8,
             progress=stop_after_two_chunks)
    landed = len(_stored(store, "r"))         # whole chunks only, never a partial one
    assert 0 < landed < n and landed % 8 == 0
    again = _run(store, [checkpoint], "r", chunk_size=8)
    assert (again.n_existing, again.n_predicted) == (landed, n - landed)
    assert len(_stored(store, "r")) == n
    third = _run(store, [checkpoint], "r")
    assert (third.n_existing, third.n_predicted) == (n, 0) and third.run_dir is None
    before = _stored(store, "r")
    redo = _run(store, [checkpoint], "r", overwrite=True)
    assert redo.n_predicted == n
    pd.testing.assert_series_equal(_stored(store, "r")["malignant"], before["malignant"])


def test_ensemble_is_the_mean_of_its_members(checkpoint, store_path, other_checkpoint):
    store = open_store(store_path)
    _run(store, [checkpoint], "a")
    _run(store, [other_checkpoint], "b")
    summary = _run(store, [checkpoint, other_checkpoint], "ab")
    assert summary.configs == ["demo", "demo"]
    a, b, ab = _stored(store, "a"), _stored(store, "b"), _stored(store, "ab")
    for col in ("malignant", "benign"):
        np.testing.assert_allclose(ab[col], (a[col] + b[col]) / 2, atol=1e-6)
    for image_id in ab.index[:5]:
        maps = [read_saliency(store.files_dir / t[image_id]).malignant
                for t in (a["saliency_path"], b["saliency_path"], ab["saliency_path"])]
        np.testing.assert_allclose(maps[2], (maps[0] + maps[1]) / 2, atol=2e-3)
        boxes = [json.loads(t.loc[image_id, "patch_boxes"]) for t in (a, b, ab)]
        assert boxes[2] == boxes[0] + boxes[1]
        files = [read_saliency(store.files_dir / t.loc[image_id, "saliency_path"])
                 for t in (a, b, ab)]             # each member's weights, halved: sum 1
        np.testing.assert_allclose(files[2].patch_attention, np.concatenate(
            [files[0].patch_attention, files[1].patch_attention]) / 2, atol=1e-12)
        assert files[2].patch_attention.sum() == pytest.approx(1)
    assert store.models().set_index("model").loc["ab", "checkpoint"].count(",") == 1


def test_images_without_pixels_are_skipped_and_counted(checkpoint, store_path):
    store = open_store(store_path)
    images = store.images(test_set=TEST_SET)
    blind = images.iloc[:3].drop(columns="abs_path").assign(path=None)
    store.write_tables({"images": blind})
    summary = _run(store, [checkpoint], "n")
    assert summary.n_no_pixels == 3 and summary.n_predicted == len(images) - 3
    assert not set(blind["image_id"]) & set(_stored(store, "n").index)


def test_errors_are_input_errors(checkpoint, store_path, tmp_path):
    store = open_store(store_path)
    with pytest.raises(InputError, match="test set 'nope' does not exist"):
        predict_test_set(store, checkpoints=[checkpoint], name="x", test_set="nope")
    with pytest.raises(InputError, match="does not exist"):
        resolve_model(store, str(tmp_path / "missing.pt"))
    with pytest.raises(InputError, match="neither a checkpoint"):
        resolve_model(store, "no-such-model")
    with pytest.raises(InputError, match="batch_size"):
        predict_test_set(store, checkpoints=[checkpoint], name="x", test_set=TEST_SET,
                         batch_size=0)
    assert resolve_model(store, str(checkpoint))[1] == [checkpoint]
    assert checkpoint_config(checkpoint) == "demo"
    assert checkpoint_config(tmp_path / "sample_model_3.p") == "paper-3"


def _cli(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_json_and_exit_codes(checkpoint, store_path, tmp_path, capsys):
    db = str(store_path)
    code, out, _ = _cli(capsys, "predict", "--db", db, "--model", str(checkpoint), "--name", "cli",
                        "--test-set", TEST_SET, "--device", "cpu", "--json")
    assert code == 0
    result = json.loads(out)
    store = open_store(store_path, read_only=True)
    assert result["model"] == "cli" and result["n_predicted"] == len(_stored(store, "cli")) > 0
    # The shipped model by name (no file path needed).
    code, out, _ = _cli(capsys, "predict", "--db", db, "--model", "gmic-demo", "--name", "shipped",
                        "--test-set", TEST_SET, "--json")
    assert code == 0 and json.loads(out)["configs"] == ["demo"]
    # Re-run through the stored model's name: resumable, nothing new.
    code, out, _ = _cli(capsys, "predict", "--db", db, "--model", "cli", "--test-set", TEST_SET,
                        "--json")
    assert code == 0 and json.loads(out)["n_predicted"] == 0
    # A checkpoint with the wrong keys, a missing one, an unknown test set: one line, exit 2.
    wrong = tmp_path / "wrong.pt"
    torch.save({"fusion_dnn.bias": torch.zeros(2)}, wrong)
    for argv in (["--model", str(wrong), "--config", "demo", "--test-set", TEST_SET],
                 ["--model", str(tmp_path / "missing.pt"), "--test-set", TEST_SET],
                 ["--model", str(checkpoint), "--test-set", "nope"],
                 ["--ensemble", str(checkpoint), "--test-set", TEST_SET],
                 ["--model", str(checkpoint), "--config", "paper", "--test-set", TEST_SET]):
        code, out, err = _cli(capsys, "predict", "--db", db, *argv, "--json")
        assert code == 2 and out == "", argv
        assert len(err.strip().splitlines()) == 1 and err.startswith("error: "), (argv, err)


def test_shipped_checkpoint_loads_strictly_and_beats_chance(tmp_path):
    """The shipped demo GMIC: small, strict keys, and it ranks an unseen synthetic cohort."""
    assert DEMO_CHECKPOINT.stat().st_size < 5e6
    raw = torch.load(DEMO_CHECKPOINT, weights_only=True)
    assert raw["config"] == "demo" == checkpoint_config(DEMO_CHECKPOINT)
    model = build_gmic("demo")
    model.load_state_dict(raw["state_dict"], strict=True)
    torch.set_num_threads(2)
    # seed 11: neither the training cohort (7) nor the demo (0); enriched so the AUC is stable.
    cohort = generate_cohort(tmp_path, n_exams=40, seed=11, cancer_fraction=0.5)
    images = cohort.tables["images"].merge(cohort.tables["exams"][["exam_id", "split"]])
    images = images[images["split"] == "test"]
    labels, _ = image_labels(images, cohort.tables["breasts"])
    x = torch.stack([preprocess_image(read_pixels(tmp_path / p), CONFIGS["demo"].input_shape,
                                      laterality=lat).image
                     for p, lat in zip(images["path"], images["laterality"])])
    with torch.inference_mode():
        scores = model.eval()(x)["y_fusion"][:, 1].numpy()
    assert labels[:, 1].sum() >= 8
    assert roc_auc(labels[:, 1], scores) > 0.6


def test_demo_store_carries_the_demo_gmic(demo_store_path):
    """add_demo_models ran the shipped GMIC over every demo image, saliency files included."""
    store = open_store(demo_store_path, read_only=True)
    models = store.models().set_index("model")
    assert models.loc[DEMO_GMIC, "kind"] == "gmic" and bool(models.loc[DEMO_GMIC, "synthetic"])
    assert "synthetic" in models.loc[DEMO_GMIC, "description"]
    rows = _stored(store, DEMO_GMIC)
    assert len(rows) == len(store.images()) and rows["malignant"].between(0, 1).all()
    saved = read_saliency(store.files_dir / rows["saliency_path"].iloc[0])
    assert saved.to_original().shape == (512, 320)
