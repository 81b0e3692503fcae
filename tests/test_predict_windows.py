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
    from models.gmic import build_gmic

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
