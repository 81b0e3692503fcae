"""The demo training script: labels, mask targets, and one tiny end-to-end run (twice: seeded)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from core.errors import InputError
from models.networks.gmic import CONFIGS, load_gmic_checkpoint
from models.inference.preprocess import Preprocessed
from models.demo.train_gmic import MASK_FULL, DemoRecipe, image_labels, main, mask_cells


def test_image_labels_follow_the_breast():
    images = pd.DataFrame({"exam_id": ["e1", "e1", "e2", "e2"], "laterality": ["L", "R", "L", "L"]})
    breasts = pd.DataFrame({"exam_id": ["e1", "e1", "e2", "e2"], "laterality": ["L", "R", "L", "R"],
                            "cancer": [1, 0, 0, 0], "histology": ["ILC", "none", "none", "none"],
                            "pathology": ["malignant", "none", "benign", "none"]})
    labels, histology = image_labels(images, breasts)
    np.testing.assert_array_equal(labels, [[0, 1], [0, 0], [1, 0], [1, 0]])
    assert list(histology) == ["ILC", "none", "none", "none"]
    with pytest.raises(InputError, match="no breast label"):
        image_labels(pd.DataFrame({"exam_id": ["x"], "laterality": ["L"]}), breasts)


def _geometry(crop_box, flipped, input_shape=(512, 320)):
    return Preprocessed(torch.zeros(()).expand(1, *input_shape), (512, 320), crop_box, flipped,
                        "right" if flipped else "left",
                        (input_shape[0] / crop_box[2], input_shape[1] / crop_box[3]))


def test_mask_cells_hand_computed():
    """No crop, no flip: cell (r, c) covers pixels [64 r, 64 r + 64) x [64 c, 64 c + 64)."""
    mask = np.zeros((512, 320), bool)
    mask[64:128, 0:64] = True             # all of cell (1, 0)
    mask[256:260, 128:192] = True         # 4 of 64 rows of cell (4, 2): 6.25 %
    cells = mask_cells(mask, np.array([0.0, 1.0]), _geometry((0, 0, 512, 320), False), (8, 5))
    assert cells.shape == (2, 8, 5) and cells[0].abs().sum() == 0
    expected = torch.zeros(8, 5)
    expected[1, 0] = 1.0
    expected[4, 2] = 0.0625 / MASK_FULL
    torch.testing.assert_close(cells[1], expected, atol=2e-3, rtol=0)
    # Benign label -> channel 0; flipped geometry mirrors the columns; no label -> zeros.
    flipped = mask_cells(mask, np.array([1.0, 0.0]), _geometry((0, 0, 512, 320), True), (8, 5))
    torch.testing.assert_close(flipped[0], expected.flip(-1), atol=2e-3, rtol=0)
    plain = _geometry((0, 0, 512, 320), False)
    assert mask_cells(mask, np.array([0.0, 0.0]), plain, (8, 5)).sum() == 0
    assert mask_cells(None, np.array([0.0, 1.0]), plain, (8, 5)).sum() == 0


def test_recipe_validation():
    with pytest.raises(InputError, match="config"):
        DemoRecipe(config="huge")
    with pytest.raises(InputError, match="epochs"):
        DemoRecipe(epochs=0)


def test_train_demo_end_to_end_is_seeded(tmp_path, capsys):
    """One epoch on 4 images, twice: the script runs, logs, saves a strict-loading checkpoint,
    and the same seeds give the same weights."""
    args = ["--n-exams", "4", "--cancer-fraction", "0.5", "--global-epochs", "1", "--epochs", "1",
            "--batch-size", "2",
            "--max-train-images", "4", "--threads", "1"]
    assert main(["--out", str(tmp_path / "a.pt"), *args]) == 0
    assert main(["--out", str(tmp_path / "b.pt"), *args]) == 0
    out = capsys.readouterr().out
    assert "global epoch 1/1" in out and "fusion epoch 1/1" in out and "saved" in out
    assert "val AUC (y_fusion)" in out
    raw = torch.load(tmp_path / "a.pt", weights_only=True)
    assert raw["config"] == "demo" and raw["recipe"]["epochs"] == 1
    assert [h["phase"] for h in raw["history"]] == ["global", "fusion"]
    a = load_gmic_checkpoint(tmp_path / "a.pt", "demo")
    b = load_gmic_checkpoint(tmp_path / "b.pt", "demo")
    assert a.config == CONFIGS["demo"]
    for (key, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), key


def test_bad_arguments_exit_2(tmp_path, capsys):
    assert main(["--out", str(tmp_path / "x.pt"), "--epochs", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: epochs=0")
