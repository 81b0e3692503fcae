"""GLAM: the official fixture (rule weights -> official outputs) on 1 and 2 threads, timm-style
model checks, checkpoint loading in every official format, and references for the paste step."""
from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from core.errors import InputError
from models.networks.gmic import build_gmic
from models.networks.checkpoints import load_checkpoint
from models.networks.glam import (
    CONFIGS,
    GLAM,
    GLAMConfig,
    _paste_local_cams,
    build_glam,
    cam_size_for,
    checkpoint_filter_fn,
    load_glam_checkpoint,
)
from models.networks.roi import gather_crops
from tests.reference_fixtures import import_rule, load_outputs, reference_dir
from tests.reference_fixtures import rule_state as state_from_rule

INPUT_SHA256 = "e185a284ac83d2dbfa0b0e2d0379589b93f7debe23afb97130245a8ad6738759"
OUTPUT_KEYS = ("y_global", "saliency_map", "saliency_map_global", "patch_locations", "local_cam")
#: smaller than "tiny" (16 x 10 grid, 2 x 2-cell window; the stride-1 local net is the cost) for speed.
SMALL = GLAMConfig(input_shape=(256, 160), cam_size=(16, 10), crop_shape=(32, 32))



def _stats(t: torch.Tensor, lead: int = 1) -> np.ndarray:
    """[mean, population std, min, max, sum] over all but the first ``lead`` axes, float64."""
    a = t.detach().double().reshape(*t.shape[:lead], -1)
    return torch.stack([a.mean(-1), a.std(-1, unbiased=False), a.amin(-1), a.amax(-1), a.sum(-1)],
                       dim=-1).numpy()


# --- the official fixture -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def fixture_dir(shared_dir):
    return reference_dir(shared_dir, "glam_reference")


@pytest.fixture(scope="module")
def official_keys(fixture_dir):
    return json.loads((fixture_dir / "keys.json").read_text())["keys"]


@pytest.fixture(scope="module")
def rule_state(fixture_dir, official_keys):
    rule = import_rule(fixture_dir / "weight_rule.py", "glam_weight_rule")
    return state_from_rule(rule, official_keys)


@pytest.fixture(scope="module")
def reference(fixture_dir):
    return load_outputs(fixture_dir)


@pytest.fixture(scope="module")
def fixture_input(fixture_dir):
    return torch.from_numpy(import_rule(fixture_dir / "input_rule.py", "glam_input_rule").make_input())


def test_paper_state_dict_is_official(official_keys):
    """Same keys, same order, same shapes as the official model: strict loading is the test."""
    own = GLAM().state_dict()
    assert [(k, list(v.shape)) for k, v in own.items()] == [(e["key"], e["shape"]) for e in official_keys]


def test_fixture_generators_reproduce(fixture_input, rule_state, official_keys):
    """Guards the comparisons below: a numpy whose default_rng stream changed would show here."""
    assert hashlib.sha256(fixture_input.numpy().tobytes()).hexdigest() == INPUT_SHA256
    for e in official_keys:
        a = np.ascontiguousarray(rule_state[e["key"]].numpy())
        assert hashlib.sha256(a.astype(a.dtype.newbyteorder("<")).tobytes()).hexdigest() == e["rule_sha256"], e["key"]


_LOCAL_STAGES = ("conv1", "bn1", "maxpool", "layer1", "layer2", "layer3", "layer4")


@pytest.fixture(scope="module", params=[1, 2], ids=["1-thread", "2-threads"])
def ours(request, rule_state, fixture_input):
    """The paper model with the rule weights on the fixture input; local stages caught by hooks."""
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    model = GLAM()
    model.load_state_dict(rule_state, strict=True)
    model.eval()
    local = {}
    handles = [getattr(model.detection_network.dn_resnet, name).register_forward_hook(
        lambda _m, _i, out, name=name: local.__setitem__(f"dn_{name}", _stats(out)))
        for name in _LOCAL_STAGES]
    try:
        with torch.no_grad():
            out = model(fixture_input, intermediates=True)
    finally:
        for h in handles:
            h.remove()
        torch.set_num_threads(before)
    return out, local


@pytest.mark.slow
def test_paper_matches_official_fixture(ours, reference):
    """Every array the fixture records: patch locations exact, the rest to the README's
    tolerances (atol 1e-5; rtol 1e-5 for logits, features and sums). Measured: bit-identical
    outputs, statistics within 1e-9 relative."""
    out, local = ours
    ref = reference
    np.testing.assert_array_equal(out["patch_locations"].numpy(), ref["patch_locations"])

    def close(name, value, rtol=0.0):
        np.testing.assert_allclose(np.asarray(value, dtype=np.float64).reshape(ref[name].shape), ref[name],
                                   rtol=rtol, atol=1e-5, err_msg=name)

    for name in ("y_global", "y_cam_layer1", "y_cam_layer2", "y_cam_layer3", "y_cam_mean_map"):
        close(name, out[name])
    close("saliency_map_global_f32", out["saliency_map_global"])
    for name in ("gn_logits_1", "gn_logits_2", "gn_logits_last"):
        close(f"{name}_f32", out[name], rtol=1e-5)
        close(f"stats_{name}", _stats(out[name]), rtol=1e-5)
    for i in (1, 2, 3):
        close(f"stats_sal_layer{i}", _stats(out[f"saliency_layer{i}"], 2), rtol=1e-5)
    close("stats_sal_mean_map", _stats(out["saliency_mean_map"], 2), rtol=1e-5)

    # ROI: the window means, their ranking (tie margins) and the floor-divided argmax.
    close("roi_score_map_stats", _stats(out["roi_score_map"]), rtol=1e-5)
    assert CONFIGS["paper"].window_cells == tuple(int(v) for v in ref["roi_window_cells"])
    pooled = F.avg_pool2d(out["roi_score_map"], tuple(int(v) for v in ref["roi_window_cells"]), stride=1)
    assert list(pooled.shape[-2:]) == [int(v) for v in ref["roi_pool_shape"]]
    flat = pooled.flatten(1)
    order = torch.sort(flat, dim=1, descending=True, stable=True)
    np.testing.assert_array_equal(order.indices[:, :8].numpy(), ref["roi_window_top8_flat_index"])
    close("roi_window_top8_values", order.values[:, :8])
    np.testing.assert_array_equal(flat.argmax(dim=1, keepdim=True).numpy(), ref["roi_window_argmax"])

    crops = out["crops"][:, 0].double()
    close("crops_sum", crops.sum((1, 2))[:, None], rtol=1e-5)
    for stat in ("mean", "min", "max"):
        close(f"crops_{stat}", getattr(crops.flatten(1), {"mean": "mean", "min": "amin", "max": "amax"}[stat])(1))
    close("crops_std", crops.flatten(1).std(1, unbiased=False))

    cam = out["local_cam"][:, 0]                      # K = 1
    close("local_cam_stats", _stats(cam, 2), rtol=1e-5)
    close("local_cam_block4_mean", F.avg_pool2d(cam.double(), 4))
    close("local_cam_first_row", cam[:, :, 0, :])
    close("local_logits_stats", _stats(out["local_logits"][:, 0], 2), rtol=1e-5)
    close("stats_local_logits", _stats(out["local_logits"][:, 0]), rtol=1e-5)
    close("detection_pooling", out["detection_pooling"][:, 0])

    close("stats_saliency_map_local", _stats(out["saliency_map_local"], 2), rtol=1e-5)
    close("stats_saliency_map", _stats(out["saliency_map"], 2), rtol=1e-5)
    close("saliency_map_block64_mean", F.avg_pool2d(out["saliency_map"].double(), 64))
    inside = torch.stack([out["saliency_map"][i, :, r:r + 512, c:c + 512]
                          for i, (r, c) in enumerate(out["patch_locations"][:, 0].tolist())])
    close("saliency_map_crop_block16_mean", F.avg_pool2d(inside.double(), 16))
    close("global_last_feature_channel_mean", out["ds_out"].double().mean((2, 3)))

    for stage in ("first_conv", "first_pool", "layer0", "layer1", "layer2", "layer3", "layer4", "final_bn", "out"):
        assert list(out[f"ds_{stage}"].shape) == list(ref[f"shape_ds_{stage}"]), stage
        close(f"stats_ds_{stage}", _stats(out[f"ds_{stage}"]), rtol=1e-5)
    for name, value in local.items():
        close(f"stats_{name}", value, rtol=1e-5)


@pytest.mark.slow
def test_segmentation_map_is_half_global_outside_the_crop(ours):
    """Outside the crop the segmentation map is the upsampled global map / 2; inside, the mean of
    the nearest-upsampled local CAM and the global map."""
    out, _ = ours
    seg, glob = out["saliency_map"], F.interpolate(out["saliency_map_global"], size=out["saliency_map"].shape[-2:])
    local = F.interpolate(out["local_cam"][:, 0], scale_factor=4)
    for i, (r, c) in enumerate(out["patch_locations"][:, 0].tolist()):
        mask = torch.ones(seg.shape[-2:], dtype=torch.bool)
        mask[r:r + 512, c:c + 512] = False
        torch.testing.assert_close(seg[i][:, mask], glob[i][:, mask] / 2, rtol=0, atol=0)
        torch.testing.assert_close(seg[i, :, r:r + 512, c:c + 512],
                                   (local[i] + glob[i, :, r:r + 512, c:c + 512]) / 2, rtol=0, atol=0)


# --- timm-style model checks (small config) -----------------------------------------------------


def test_small_forward_shapes_and_no_nan():
    torch.manual_seed(0)
    cfg = SMALL
    model = build_glam(cfg).eval()
    x = torch.randn(2, 1, *cfg.input_shape)
    with torch.no_grad():
        out = model(x)
    assert set(out) == set(OUTPUT_KEYS)
    assert out["y_global"].shape == (2, 2)
    assert out["saliency_map"].shape == (2, 2, *cfg.input_shape)
    assert out["saliency_map_global"].shape == (2, 2, *cfg.cam_size)
    assert out["patch_locations"].shape == (2, 1, 2) and out["patch_locations"].dtype == torch.int64
    assert out["local_cam"].shape == (2, 1, 2, cfg.crop_shape[0] // 4, cfg.crop_shape[1] // 4)
    for k, v in out.items():
        assert not torch.isnan(v.float()).any(), k
    assert ((out["y_global"] > 0) & (out["y_global"] < 1)).all()
    loc = out["patch_locations"]
    assert (loc >= 0).all() and (loc[..., 0] + cfg.crop_shape[0] <= cfg.input_shape[0]).all()


def test_small_gradient_reaches_every_trainable_parameter():
    """y_global trains the global module, the segmentation map the local one; the unused
    ``combine`` conv is frozen (kept only for strict loading)."""
    torch.manual_seed(0)
    model = build_glam(SMALL).train()
    out = model(torch.randn(2, 1, *SMALL.input_shape))
    (out["y_global"].sum() + out["saliency_map"].mean()).backward()
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert frozen == ["global_network.postprocess_module.combine.weight"]
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_forward_keeps_nothing_on_the_module():
    model = build_glam(SMALL).eval()
    before = set(vars(model))
    with torch.no_grad():
        model(torch.randn(1, 1, *SMALL.input_shape))
    assert set(vars(model)) == before


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_configs_are_consistent(name):
    cfg = CONFIGS[name]
    assert cam_size_for(cfg.input_shape) == cfg.cam_size
    assert GLAM(cfg).state_dict().keys() == GLAM().state_dict().keys()   # paper weights fit all


def test_paper_config_numbers():
    cfg = CONFIGS["paper"]
    assert cfg.window_cells == (32, 32)
    assert round(184 * 120 * cfg.percent_k) == 662 and round(128 * 128 * cfg.detection_percent_k) == 4915


def test_config_errors_are_one_line():
    with pytest.raises(InputError, match=r"cam_size=\(184, 120\)"):
        GLAMConfig(cam_size=(46, 30))
    with pytest.raises(InputError, match="exceeds"):
        GLAMConfig(input_shape=(512, 320), cam_size=(32, 20))
    with pytest.raises(InputError, match="unknown"):
        build_glam("nope")
    with pytest.raises(InputError, match=r"\(N, 1, H, W\)"):
        build_glam("tiny")(torch.zeros(1, 3, 512, 320))


# --- the paste step against the gather ----------------------------------------------------------


@pytest.mark.parametrize("loc", [(0, 0), (10, 7), (30, 25), (36, 28)])
def test_paste_inverts_gather(loc):
    """Pasting gathered crops back (CAM at crop resolution) rebuilds the image where they lie,
    also for a crop hanging over the bottom-right edge (its visible part is the image's)."""
    x = torch.arange(40 * 32, dtype=torch.float32).view(1, 1, 40, 32) + 1
    locations = torch.tensor([[loc]])
    crops = gather_crops(x, locations, (8, 8))                      # (1, 1, 8, 8)
    pasted = _paste_local_cams(crops.unsqueeze(2), locations, (8, 8), (40, 32))
    r, c = loc
    np.testing.assert_array_equal(pasted[0, 0, r:r + 8, c:c + 8].numpy(), x[0, 0, r:r + 8, c:c + 8].numpy())
    outside = torch.ones(40, 32, dtype=torch.bool)
    outside[r:r + 8, c:c + 8] = False
    assert (pasted[0, 0][outside] == 0).all()


def test_paste_upsamples_nearest_and_later_crops_win():
    cam = torch.tensor([[[[[1.0, 2.0], [3.0, 4.0]]], [[[5.0, 6.0], [7.0, 8.0]]]]])  # (1, 2, 1, 2, 2)
    out = _paste_local_cams(cam, torch.tensor([[[0, 0], [2, 2]]]), (4, 4), (8, 8))[0, 0]
    expected = torch.zeros(8, 8)
    expected[0:4, 0:4] = torch.tensor([[1.0, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]])
    expected[2:6, 2:6] = torch.tensor([[5.0, 5, 6, 6], [5, 5, 6, 6], [7, 7, 8, 8], [7, 7, 8, 8]])
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


# --- checkpoints --------------------------------------------------------------------------------


def _hollow(state: dict) -> dict:
    """Same keys and shapes, one stored element each (expanded zeros): cheap files for refusals."""
    return {k: torch.zeros((), dtype=v.dtype).expand(v.shape) for k, v in state.items()}


@pytest.mark.parametrize("fmt", ["bare", "model", "legacy"])
def test_checkpoint_formats_load_strictly(tmp_path, rule_state, fmt):
    """The rule weights as the official repositories write them: a bare state dict (GLAM's
    model_*.ckpt), {"model": sd} (breast_cancer_classifier) and torch < 1.6's non-zip format."""
    path = tmp_path / "glam.ckpt"
    if fmt == "legacy":
        torch.save(rule_state, path, _use_new_zipfile_serialization=False)
    else:
        torch.save(rule_state if fmt == "bare" else {fmt: rule_state, "epoch": 3}, path)
    model = load_glam_checkpoint(path, "tiny")
    assert not model.training and model.config == CONFIGS["tiny"]
    for k, v in model.state_dict().items():
        assert torch.equal(v, rule_state[k]), k


def test_state_dict_container_and_dataparallel_prefix(tmp_path):
    state = {f"module.{k}": v for k, v in _hollow(GLAM(SMALL).state_dict()).items()}
    path = tmp_path / "glam.ckpt"
    torch.save({"state_dict": state, "optimizer": {}}, path)
    assert build_glam(SMALL, weights=path).state_dict().keys() == GLAM().state_dict().keys()


def test_checkpoint_filter_only_strips_dataparallel_prefix():
    assert list(checkpoint_filter_fn({"module.a": 1, "b": 2})) == ["a", "b"]


def _one_line_error(path, config=SMALL) -> str:
    with pytest.raises(InputError) as info:
        load_glam_checkpoint(path, config)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    return message


def test_wrong_checkpoints_are_refused_with_one_line(tmp_path):
    gmic = tmp_path / "gmic.pt"
    torch.save(_hollow(build_gmic("tiny").state_dict()), gmic)
    assert "is not a GLAM checkpoint" in _one_line_error(gmic)
    assert "does not exist" in _one_line_error(tmp_path / "missing.ckpt")
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint at all")
    assert "could not be read" in _one_line_error(garbage)
    tensor = tmp_path / "tensor.ckpt"
    torch.save(torch.zeros(3), tensor)
    assert "not a state dict" in _one_line_error(tensor)
    three = tmp_path / "three-classes.ckpt"
    torch.save(_hollow(GLAM(dataclasses.replace(SMALL, num_classes=3)).state_dict()), three)
    assert "wrong shape" in _one_line_error(three)


def test_pickled_code_is_refused(tmp_path):
    """weights_only=True: a checkpoint holding arbitrary objects is not unpickled."""
    path = tmp_path / "evil.ckpt"
    torch.save({"model": {"w": torch.zeros(1)}, "cfg": GLAMConfig()}, path)
    assert "could not be read" in _one_line_error(path)


def test_load_checkpoint_is_generic(tmp_path):
    """The shared loader works for any family: here a small module, with a filter function."""
    net = torch.nn.Sequential(torch.nn.Linear(2, 3))
    path = tmp_path / "lin.pt"
    torch.save({"state_dict": {"renamed.weight": net[0].weight, "renamed.bias": net[0].bias}}, path)
    fresh = torch.nn.Sequential(torch.nn.Linear(2, 3))
    load_checkpoint(path, fresh, filter_fn=lambda sd: {k.replace("renamed", "0"): v for k, v in sd.items()},
                    family="toy")
    assert torch.equal(fresh[0].weight, net[0].weight)
