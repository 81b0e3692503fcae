"""The inference copy (`models.networks.fold`) of GLAM and the NYU four-view model computes what
the original computes: BatchNorm folded, grey stem, channels_last (GMIC's is in test_gmic)."""
from __future__ import annotations

import torch
from torch import nn

from models.networks.fold import optimize_for_inference
from models.networks.glam import build_glam
from models.networks.nyu_dmv import VIEWS, build_nyu_dmv


def _randomise_batchnorm(model: nn.Module, seed: int) -> nn.Module:
    """Running statistics and affine weights away from the identity, so a wrong fold shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.1)
    return model.eval()


def test_glam_inference_copy_equals_the_original():
    torch.manual_seed(0)
    model = _randomise_batchnorm(build_glam("tiny"), 1)
    fast = optimize_for_inference(model)
    assert fast.detection_network.dn_resnet.conv1.in_channels == 1
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.detection_network.modules())
    x = torch.randn(2, 1, *model.config.input_shape)
    with torch.no_grad():
        ref, out = model(x), fast(x.contiguous(memory_format=torch.channels_last))
    assert torch.equal(ref["patch_locations"], out["patch_locations"])
    for key in ("y_global", "saliency_map"):
        torch.testing.assert_close(out[key], ref[key], rtol=1e-4, atol=1e-5)


def test_nyu_four_view_inference_copy_equals_the_original():
    torch.manual_seed(0)
    model = _randomise_batchnorm(build_nyu_dmv("demo"), 2)
    fast = optimize_for_inference(model)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in fast.modules()) < \
        sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    x = {v: torch.randn(2, 1, *model.config.input_shape) for v in VIEWS}
    with torch.no_grad():
        ref, out = model(x), fast(x)
    for key in ("CC", "MLO", "breast_probs"):
        torch.testing.assert_close(out[key], ref[key], rtol=1e-4, atol=1e-5)
