"""GLAM inside ILCscope: `python -m core predict --family glam` on the demo store (a 'tiny' GLAM
with seeded weights), checked image by image against the network run by hand on the official
window, plus the family guess from a checkpoint's keys."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cli import main
from core.errors import InputError
from core.io.images import read_pixels
from core.saliency import read_saliency
from core.store import open_store
from core.store.runs import get_run
from models.families import guess_family
from models.inference.predict_windows import crop_settings, windows_for
from models.inference.windows import cut_window, prepare_view
from models.families import FAMILIES
from models.networks.glam import build_glam
from tests.conftest import copy_store

TEST_SET = "test-ILC"


@pytest.fixture
def store_path(demo_store_path, tmp_path) -> Path:
    return copy_store(demo_store_path, tmp_path)


@pytest.fixture(scope="module")
def glam_file(tmp_path_factory) -> Path:
    torch.manual_seed(3)
    model = build_glam("tiny").eval()
    path = tmp_path_factory.mktemp("glam") / "glam-tiny.ckpt"
    torch.save(model.state_dict(), path, _use_new_zipfile_serialization=False)  # legacy format
    return path


def test_family_is_guessed_from_the_checkpoint_keys(glam_file, tmp_path):
    from models.networks.gmic import build_gmic

    assert guess_family(glam_file).name == "glam"
    gmic = tmp_path / "gmic.pt"
    torch.save({"model": build_gmic("demo").state_dict()}, gmic)
    assert guess_family(gmic).name == "gmic"
    other = tmp_path / "other.pt"
    torch.save({"fc.weight": torch.zeros(2, 2)}, other)
    with pytest.raises(InputError, match="no known family.*--family"):
        guess_family(other)


def test_glam_predict_equals_the_network_on_the_official_window(store_path, glam_file, capsys):
    code = main(["predict", "--db", str(store_path), "--model", str(glam_file), "--config",
                 "tiny", "--test-set", TEST_SET, "--name", "glam-tiny", "--json"])
    out = capsys.readouterr()
    assert code == 0, out.err
    summary = json.loads(out.out)
    store = open_store(store_path)
    images = store.images(test_set=TEST_SET)
    assert summary["n_predicted"] == len(images) and summary["n_failed"] == 0
    models = store.models().set_index("model")
    assert models.loc["glam-tiny", "kind"] == "glam"
    params = get_run(store, Path(summary["run_dir"]).name)["params"]
    assert params["preprocess"]["draws"] == 0 and params["family"] == "glam"

    preds = store.predictions(models=["glam-tiny"], level="image", test_set=TEST_SET)
    model = build_glam("tiny")
    model.load_state_dict(torch.load(glam_file, weights_only=True))
    model.eval()
    windows = windows_for(FAMILIES["glam"], model.config.input_shape)
    iterations, buffer = crop_settings(windows, FAMILIES["glam"])
    assert windows == {"CC": (512, 320), "MLO": (512, 320)} and (iterations, buffer) == (17, 9)
    for row in images.head(3).itertuples():
        pixels = read_pixels(row.abs_path)
        prep = prepare_view(pixels, row.laterality, row.view, windows[row.view],
                            iterations=iterations, buffer=buffer)
        win = cut_window(prep.image, row.view, prep.centre, windows[row.view],
                         np.random.RandomState(0))
        with torch.inference_mode():
            want = model(torch.from_numpy(win.image)[None, None])["y_global"][0, 1].item()
        got = preds.loc[preds["case_id"] == row.image_id, "score"].iat[0]
        assert got == pytest.approx(want, abs=1e-5)
        rel = store.select("predictions", model="glam-tiny", case_id=row.image_id)
        sal = read_saliency(store.files_dir / rel["saliency_path"].iat[0])
        assert sal.malignant.shape == (512 // 8, 320 // 8)
        on_image = sal.to_original()
        assert on_image.shape == pixels.shape and float(on_image.max()) > 0


def test_draws_average_augmented_windows_and_are_bounded(store_path, glam_file, capsys):
    args = ["predict", "--db", str(store_path), "--model", str(glam_file), "--family", "glam",
            "--config", "tiny", "--test-set", TEST_SET, "--json"]
    assert main(args + ["--name", "g0", "--draws", "0"]) == 0
    assert main(args + ["--name", "g2", "--draws", "2"]) == 0
    capsys.readouterr()
    store = open_store(store_path)
    a = store.predictions(models=["g0"], level="image", test_set=TEST_SET)["score"]
    b = store.predictions(models=["g2"], level="image", test_set=TEST_SET)["score"]
    assert len(a) == len(b) and not np.allclose(a.to_numpy(), b.to_numpy())
    assert main(args + ["--name", "g9", "--draws", "1000"]) == 2
    assert "draws is 1000" in capsys.readouterr().err


def test_nyu_image_only_scores_each_breast_as_the_official_run_model(store_path, tmp_path):
    """Breast level: per exam, the four views' windows in the official draw order, the mean of
    the CC and MLO heads per label; checked against the network run by hand on two exams."""
    from models.inference.predict_windows import predict_windows
    from models.inference.windows import draw_windows
    from models.networks.nyu_dmv import LABELS, build_nyu_dmv

    torch.manual_seed(5)
    path = tmp_path / "nyu-image.p"
    torch.save({"model": build_nyu_dmv("image").state_dict()}, path)     # the official format
    assert guess_family(path).name == "nyu-image"
    store = open_store(store_path)
    windows = {"CC": (268, 194), "MLO": (297, 175)}      # the official windows at 1/10
    summary = predict_windows(store, fam=FAMILIES["nyu-image"], checkpoint=path, name="nyu-x",
                              test_set=TEST_SET, windows=windows, draws=1, device="cpu",
                              batch_size=2)
    preds = store.predictions(models=["nyu-x"], level="breast", test_set=TEST_SET)
    images = store.images(test_set=TEST_SET)
    assert len(preds) == 2 * images["exam_id"].nunique()
    assert summary.n_predicted == len(images)
    model = build_nyu_dmv("image", weights=path)
    iterations, buffer = crop_settings(windows, FAMILIES["nyu-image"])
    rng = np.random.RandomState(0)
    for exam in sorted(images["exam_id"].unique())[:2]:
        rows = images[images["exam_id"] == exam]
        views = {f"{r.laterality}-{r.view}": prepare_view(read_pixels(r.abs_path), r.laterality,
                                                          r.view, windows[r.view],
                                                          iterations=iterations, buffer=buffer)
                 for r in rows.itertuples()}
        cut = draw_windows(views, windows, rng, 1)
        with torch.inference_mode():
            probs = model({v: torch.from_numpy(cut[v][0].image)[None, None] for v in cut})
        p = dict(zip(LABELS, probs["breast_probs"][0].tolist()))
        got = preds[preds["exam_id"] == exam].set_index("laterality")
        assert got.loc["L", "score"] == pytest.approx(p["left_malignant"], abs=1e-5)
        assert got.loc["R", "score"] == pytest.approx(p["right_malignant"], abs=1e-5)
        assert got.loc["R", "benign"] == pytest.approx(p["right_benign"], abs=1e-5)
