"""The study's GMIC loss: a hand-computed case, torch's BCE on probabilities in float64 (values and
gradients), saturated logits, and a finite loss and gradient under bf16 autocast on CPU."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from core.errors import InputError
from models.networks.gmic import build_gmic, top_t_percent_pool
from models.training.loss import DEFAULT_BETA, LOSS_TERMS, gmic_labels, gmic_loss, gmic_loss_terms


def _sig(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v))


def _bce(y: float, p: float) -> float:
    return -(y * math.log(p) + (1 - y) * math.log(1 - p))


def _outputs(sal, local, fusion) -> dict:
    return {"saliency_logits": sal, "local_logits": local, "fusion_logits": fusion}


def test_hand_computed_single_image():
    # one image, 2 classes, 2 x 2 saliency grid; percent_t 0.5 -> the top 2 cells of each map
    sal = torch.tensor([[[[0.0, 2.0], [-1.0, 1.0]], [[3.0, -2.0], [0.5, -0.5]]]])
    local = torch.tensor([[0.3, -1.2]])
    fusion = torch.tensor([[-0.7, 2.5]])
    labels = gmic_labels([1])  # benign 0, malignant 1
    beta = 0.1
    y_global = [(_sig(2.0) + _sig(1.0)) / 2, (_sig(3.0) + _sig(0.5)) / 2]
    expected_terms = {
        "global": _bce(0, y_global[0]) + _bce(1, y_global[1]),
        "local": _bce(0, _sig(0.3)) + _bce(1, _sig(-1.2)),
        "fusion": _bce(0, _sig(-0.7)) + _bce(1, _sig(2.5)),
        "saliency_l1": sum(_sig(v) for v in (0.0, 2.0, -1.0, 1.0)) / 4
                       + sum(_sig(v) for v in (3.0, -2.0, 0.5, -0.5)) / 4,
    }
    expected_terms["total"] = (expected_terms["global"] + expected_terms["local"] + expected_terms["fusion"]
                               + beta * expected_terms["saliency_l1"])
    terms = gmic_loss_terms(_outputs(sal, local, fusion), labels, percent_t=0.5, beta=beta)
    assert set(terms) == set(LOSS_TERMS)
    for name, value in expected_terms.items():
        assert terms[name].shape == (1,)
        assert terms[name].item() == pytest.approx(value, rel=1e-6), name
    loss = gmic_loss(_outputs(sal, local, fusion), labels, percent_t=0.5, beta=beta)
    assert loss.item() == pytest.approx(expected_terms["total"], rel=1e-6)


def _reference_float64(sal, local, fusion, labels, percent_t, beta):
    """Torch's BCE on probabilities, everything in float64, the sum over cells replaced by the mean."""
    y = labels.double()
    saliency = torch.sigmoid(sal.double())
    per_image = (F.binary_cross_entropy(top_t_percent_pool(saliency, percent_t), y, reduction="none")
                 + F.binary_cross_entropy(torch.sigmoid(local.double()), y, reduction="none")
                 + F.binary_cross_entropy(torch.sigmoid(fusion.double()), y, reduction="none")
                 + beta * saliency.mean(dim=(2, 3))).sum(dim=1)
    return per_image.mean()


def test_matches_torch_bce_on_probabilities_in_float64():
    gen = torch.Generator().manual_seed(3)
    n, h, w = 6, 8, 5
    sal = (3 * torch.randn(n, 2, h, w, generator=gen)).requires_grad_()
    local = (2 * torch.randn(n, 2, generator=gen)).requires_grad_()
    fusion = (2 * torch.randn(n, 2, generator=gen)).requires_grad_()
    labels = gmic_labels(torch.randint(0, 2, (n,), generator=gen), torch.randint(0, 2, (n,), generator=gen))
    ours = gmic_loss(_outputs(sal, local, fusion), labels, percent_t=0.1, beta=0.05)
    ours.backward()
    leaves64 = [t.detach().double().requires_grad_() for t in (sal, local, fusion)]
    ref = _reference_float64(*leaves64, labels, 0.1, 0.05)
    ref.backward()
    assert ours.dtype == torch.float32
    assert ours.item() == pytest.approx(ref.item(), rel=1e-6)
    for mine, t in zip((sal, local, fusion), leaves64, strict=True):
        torch.testing.assert_close(mine.grad.double(), t.grad, rtol=1e-5, atol=1e-7)


def test_saturated_logits_stay_exact():
    # a confident wrong answer: probabilities round to 1.0 but the logit still says how wrong
    big = 40.0
    sal = torch.full((1, 2, 2, 2), big)
    local = torch.full((1, 2), big)
    fusion = torch.full((1, 2), big)
    labels = gmic_labels([0])  # both classes 0, every output says 1
    terms = gmic_loss_terms(_outputs(sal, local, fusion), labels, percent_t=0.5, beta=0.0)
    softplus = big + math.log1p(math.exp(-big))  # -log(1 - sigmoid(40)), exact
    for name in ("global", "local", "fusion"):
        assert terms[name].item() == pytest.approx(2 * softplus, rel=1e-6), name
    # the naive float32 BCE on probabilities cannot see it: torch clamps log(0) to -100
    naive = F.binary_cross_entropy(torch.sigmoid(local), labels, reduction="sum").item()
    assert naive == pytest.approx(200.0)


def test_finite_under_bf16_autocast_on_cpu():
    torch.manual_seed(0)
    model = build_gmic("demo").train()
    x = torch.randn(2, 1, 512, 320)
    labels = gmic_labels([1, 0])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x, intermediates=True)
        loss = gmic_loss(out, labels, percent_t=model.config.percent_t)
    assert out["fusion_logits"].dtype == torch.bfloat16  # autocast really was on
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    with torch.no_grad():
        full = gmic_loss(model(x, intermediates=True), labels, percent_t=model.config.percent_t)
    assert loss.item() == pytest.approx(full.item(), rel=0.05)


def test_labels_and_bad_input():
    labels = gmic_labels([1, 0, 1])
    assert labels.tolist() == [[0.0, 1.0], [0.0, 0.0], [0.0, 1.0]]
    assert gmic_labels([1, 0], [0, 1]).tolist() == [[0.0, 1.0], [1.0, 0.0]]
    with pytest.raises(InputError, match="0 or 1"):
        gmic_labels([2, 0])
    with pytest.raises(InputError, match="one per image"):
        gmic_labels([1, 0], [1])
    sal, logits = torch.zeros(2, 2, 2, 2), torch.zeros(2, 2)
    with pytest.raises(InputError, match="intermediates=True"):
        gmic_loss({"y_global": logits}, gmic_labels([1, 0]), percent_t=0.5)
    with pytest.raises(InputError, match="labels have shape"):
        gmic_loss(_outputs(sal, logits, logits), torch.zeros(2), percent_t=0.5)
    with pytest.raises(InputError, match="beta"):
        gmic_loss(_outputs(sal, logits, logits), gmic_labels([1, 0]), percent_t=0.5, beta=-1.0)
    with pytest.raises(InputError, match="reduction"):
        gmic_loss(_outputs(sal, logits, logits), gmic_labels([1, 0]), percent_t=0.5, reduction="max")
    assert DEFAULT_BETA > 0
