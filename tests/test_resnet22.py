"""The shared ResNet-22: one module whose keys fit GMIC, GLAM and the NYU view-wise columns."""
from __future__ import annotations

import json

import pytest
import torch

from models.networks.resnet22 import STAGE_NAMES, ResNet22, resnet22_out_size


def _keys(shared_dir, fixture, prefix, network=None):
    data = json.loads((shared_dir / "fixtures" / fixture / "keys.json").read_text())
    entries = data["networks"][network]["keys"] if network else data["keys"]
    return [(e["key"][len(prefix):], e["shape"]) for e in entries if e["key"].startswith(prefix)]


@pytest.mark.parametrize("fixture, prefix, network, kwargs", [
    ("gmic_reference", "ds_net.", None, {}),
    ("glam_reference", "global_network.downsampling_branch.", None, {}),
    ("nyu_dmv_reference", "view_resnet.", "SingleImageBreastModel_1ch", {"first_layer_padding": 0}),
    ("nyu_dmv_reference", "view_resnet.", "SingleImageBreastModel_3ch",
     {"first_layer_padding": 0, "input_channels": 3}),
])
def test_keys_and_shapes_match_the_official_networks(shared_dir, fixture, prefix, network, kwargs):
    own = [(k, list(v.shape)) for k, v in ResNet22(**kwargs).state_dict().items()]
    assert own == _keys(shared_dir, fixture, prefix, network)


@pytest.mark.parametrize("shape, padding, channels", [((130, 97), 3, 1), ((131, 96), 0, 3), ((200, 64), 0, 1)])
def test_out_size_and_intermediates(shape, padding, channels):
    torch.manual_seed(0)
    net = ResNet22(4, input_channels=channels, first_layer_padding=padding).eval()
    x = torch.randn(2, channels, *shape)
    with torch.no_grad():
        stages = net.forward_intermediates(x)
        out = net(x)
    assert tuple(stages) == STAGE_NAMES
    torch.testing.assert_close(stages["out"], out, rtol=0, atol=0)
    torch.testing.assert_close(stages["out"], stages["final_bn"].clamp_min(0), rtol=0, atol=0)
    for s in range(5):
        expected = tuple(resnet22_out_size(n, padding, stage=s) for n in shape)
        assert tuple(stages[f"layer{s}"].shape[-2:]) == expected, s
    assert out.shape == (2, 64, *(resnet22_out_size(n, padding) for n in shape))
