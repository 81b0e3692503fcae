"""GMIC: the official fixture (rule weights -> official outputs), timm-style model checks,
checkpoint loading, and brute-force references for the non-learned steps (ROI search, crops)."""
from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np
import pytest
import torch

from core.errors import InputError
from models.networks.gmic import (
    CONFIGS,
    GMIC,
    GMICConfig,
    PAPER_PERCENT_T,
    _gather_crops,
    build_gmic,
    cam_size_for,
    checkpoint_filter_fn,
    greedy_roi_cells,
    load_gmic_checkpoint,
    optimize_for_inference,
    top_t_percent_pool,
)
from tests.reference_fixtures import import_rule, load_outputs, reference_dir
from tests.reference_fixtures import rule_state as state_from_rule

OUTPUT_KEYS = ("y_global", "y_local", "y_fusion", "saliency_map", "patch_locations", "patch_attns")


# --- the official fixture -----------------------------------------------------------------------



@pytest.fixture(scope="module")
def fixture_dir(shared_dir):
    return reference_dir(shared_dir, "gmic_reference")


@pytest.fixture(scope="module")
def official_keys(fixture_dir):
    return json.loads((fixture_dir / "keys.json").read_text())["keys"]


@pytest.fixture(scope="module")
def rule_state(fixture_dir, official_keys):
    rule = import_rule(fixture_dir / "weight_rule.py", "gmic_weight_rule")
    return state_from_rule(rule, official_keys)


@pytest.fixture(scope="module")
def reference(fixture_dir):
    return load_outputs(fixture_dir)


_STAGES = {  # fixture stage name -> (module path, which end of the net)
    "ds_first_conv": "ds_net.first_conv", "ds_first_pool": "ds_net.first_pool",
    **{f"ds_layer{i}": f"ds_net.layer_list.{i}" for i in range(5)},
    "ds_final_bn": "ds_net.final_bn", "ds_out": "ds_net",
    "dn_conv1": "dn_resnet.conv1", "dn_maxpool": "dn_resnet.maxpool",
    **{f"dn_layer{i}": f"dn_resnet.layer{i}" for i in range(1, 5)},
}


@pytest.fixture(scope="module")
def fixture_input(fixture_dir):
    return torch.from_numpy(import_rule(fixture_dir / "input_rule.py", "gmic_input_rule").make_input())


@pytest.fixture(scope="module")
def ours(fixture_input, rule_state):
    """Our paper model with the rule weights on the fixture input: outputs + per-stage stats."""
    torch.set_num_threads(2)
    x = fixture_input
    model = build_gmic("paper")
    model.load_state_dict(rule_state, strict=True)
    model.eval()
    stats, hooks = {}, []
    for stage, path in _STAGES.items():
        def hook(_m, _inp, out, stage=stage):  # stats now: later in-place ReLUs change `out`
            o = out.detach().double().flatten(1)
            stats[stage] = (tuple(out.shape), torch.stack(
                [o.mean(1), o.std(1, correction=0), o.amin(1), o.amax(1), o.sum(1)], 1).numpy())
        hooks.append(model.get_submodule(path).register_forward_hook(hook))
    with torch.no_grad():
        out = model(x, intermediates=True)
    for h in hooks:
        h.remove()
    return {k: v.numpy() for k, v in out.items()}, stats


INPUT_SHA256 = "e185a284ac83d2dbfa0b0e2d0379589b93f7debe23afb97130245a8ad6738759"  # fixture README


def test_fixture_generators_reproduce(fixture_input, rule_state, official_keys):
    """Guards the comparisons below: a numpy whose default_rng stream changed would show here."""
    assert hashlib.sha256(fixture_input.numpy().tobytes()).hexdigest() == INPUT_SHA256
    for e in official_keys:
        a = np.ascontiguousarray(rule_state[e["key"]].numpy())
        assert hashlib.sha256(a.astype(a.dtype.newbyteorder("<")).tobytes()).hexdigest() == e["rule_sha256"], e["key"]


FIXTURE_OUTPUTS = ["y_global", "y_local", "y_fusion", "saliency_map", "patch_attns", "saliency_logits",
                   "roi_score_map", "global_vec", "z", "h_crops", "attn_scores", "local_logits",
                   "fusion_logits"]


@pytest.mark.parametrize("name", FIXTURE_OUTPUTS)
def test_paper_matches_official_fixture(ours, reference, name):
    out, _ = ours
    # float32 everywhere; the reference is float32 cast to float64. Unbounded values get rtol too.
    np.testing.assert_allclose(out[name], reference[name], atol=1e-5, rtol=1e-5)
    assert out[name].shape == reference[name].shape


def test_paper_patch_locations_exact(ours, reference):
    out, _ = ours
    assert out["patch_locations"].dtype == np.int64
    np.testing.assert_array_equal(out["patch_locations"], reference["patch_locations"])


def test_paper_fusion_input_and_crops(ours, reference):
    out, _ = ours
    np.testing.assert_allclose(np.concatenate([out["global_vec"], out["z"]], 1), reference["fusion_input"],
                               atol=1e-5, rtol=1e-5)
    crops = out["crops"].astype(np.float64)
    for stat, fn in [("sum", np.sum), ("mean", np.mean), ("std", np.std), ("min", np.min), ("max", np.max)]:
        np.testing.assert_allclose(fn(crops, axis=(2, 3)), reference[f"crops_{stat}"], rtol=1e-5, atol=1e-4)


def test_paper_roi_windows(ours, reference):
    """The greedy search, rerun on the fixture's own score map, picks the fixture's windows."""
    cells = greedy_roi_cells(torch.from_numpy(reference["roi_score_map"]).float(), (4, 4), 6)
    np.testing.assert_array_equal(cells[..., 0] * 27 + cells[..., 1], reference["roi_window_argmax"])
    np.testing.assert_array_equal(cells.numpy() * 64, reference["patch_locations"])


@pytest.mark.parametrize("model_id", sorted(PAPER_PERCENT_T))
def test_paper_y_global_per_checkpoint(ours, reference, model_id):
    out, _ = ours
    cfg = CONFIGS[f"paper-{model_id}"]
    assert cfg.percent_t == reference["percent_t_models_1_to_5"][model_id - 1]
    y = top_t_percent_pool(torch.from_numpy(out["saliency_map"]), cfg.percent_t).numpy()
    np.testing.assert_allclose(y, reference[f"y_global_model{model_id}"], atol=1e-5)
    assert round(46 * 30 * cfg.percent_t) == reference["top_t_models_1_to_5"][model_id - 1]


@pytest.mark.parametrize("stage", sorted(_STAGES))
def test_paper_intermediate_stages(ours, reference, stage):
    _, stats = ours
    shape, ours_stats = stats[stage]
    assert list(shape) == list(reference[f"shape_{stage}"])
    np.testing.assert_allclose(ours_stats, reference[f"stats_{stage}"], rtol=2e-5, atol=1e-4)


def test_optimized_copy_matches_fixture(fixture_input, rule_state, reference):
    """optimize_for_inference (BN folded, channels_last) keeps the official outputs."""
    torch.set_num_threads(2)
    model = build_gmic("paper")
    model.load_state_dict(rule_state, strict=True)
    fast = optimize_for_inference(model.eval())
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules()) == 11
    assert not any(p.requires_grad for p in fast.parameters())
    with torch.inference_mode():
        out = fast(fixture_input)
    np.testing.assert_array_equal(out["patch_locations"].numpy(), reference["patch_locations"])
    for k in ("y_global", "y_local", "y_fusion", "saliency_map", "patch_attns"):
        np.testing.assert_allclose(out[k].numpy(), reference[k], atol=2e-5, err_msg=k)
    # the original model is untouched (still 41 BatchNorms, official keys)
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) == 41


def test_paper_state_dict_is_official(official_keys):
    sd = build_gmic("paper").state_dict()
    assert list(sd) == [e["key"] for e in official_keys]
    for e in official_keys:
        assert list(sd[e["key"]].shape) == e["shape"], e["key"]
        assert str(sd[e["key"]].dtype) == "torch." + e["dtype"], e["key"]
    n = sum(p.numel() for p in build_gmic("paper").parameters())
    assert n == 14_110_322


# --- checkpoints --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def released_like_state(rule_state):
    """What sample_model_*.p holds: the 258 official tensors plus the unused shared_rep_filter."""
    state = dict(rule_state)
    state["shared_rep_filter.weight"] = torch.zeros(256, 256, 4, 4)
    return state


def test_strict_load_needs_the_filter(released_like_state):
    model = build_gmic("paper")
    with pytest.raises(RuntimeError, match="shared_rep_filter"):
        model.load_state_dict(released_like_state, strict=True)
    filtered = checkpoint_filter_fn(released_like_state)
    assert "shared_rep_filter.weight" not in filtered and len(filtered) == 258
    model.load_state_dict(filtered, strict=True)
    wrapped = checkpoint_filter_fn({"state_dict": {"module." + k: v for k, v in filtered.items()}})
    assert list(wrapped) == list(filtered)


@pytest.mark.parametrize("legacy", [True, False], ids=["legacy-format", "zip-format"])
def test_load_gmic_checkpoint(tmp_path, released_like_state, rule_state, legacy):
    path = tmp_path / "sample_model_1.p"
    torch.save(released_like_state, path, _use_new_zipfile_serialization=not legacy)
    model = load_gmic_checkpoint(path, "tiny")  # same state-dict layout as "paper", 40x cheaper
    assert not model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, rule_state[k]), k
    assert build_gmic("tiny", weights=path).config == CONFIGS["tiny"]


def test_load_gmic_checkpoint_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_gmic_checkpoint(tmp_path / "missing.p")
    path = tmp_path / "partial.p"
    torch.save({"fusion_dnn.bias": torch.zeros(2)}, path)
    with pytest.raises(InputError, match="missing"):
        load_gmic_checkpoint(path, "tiny")


# --- timm-style checks for every architecture ---------------------------------------------------


# For the mechanism tests: the tiny layout at half its size (4 x 3 grid, 64-px cells).
MINI = GMICConfig(input_shape=(256, 192), cam_size=(4, 3), crop_shape=(64, 64), num_patches=3,
                  percent_t=0.1)


def _cheap_input(cfg: GMICConfig, n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 1, *cfg.input_shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_config_grid_matches_network_arithmetic(name):
    cfg = CONFIGS[name]
    assert cfg.cam_size == cam_size_for(cfg.input_shape)
    assert cfg.window_cells[0] <= cfg.cam_size[0] and cfg.window_cells[1] <= cfg.cam_size[1]


@pytest.mark.parametrize("name", ["tiny", "cpu-small"])
def test_forward_shapes_eval(name):
    torch.set_num_threads(2)
    cfg = CONFIGS[name]
    n = 2 if name == "tiny" else 1
    model = build_gmic(name).eval()
    with torch.no_grad():
        out = model(_cheap_input(cfg, n))
    k, (h, w), c = cfg.num_patches, cfg.cam_size, cfg.num_classes
    expected = {"y_global": (n, c), "y_local": (n, c), "y_fusion": (n, c), "saliency_map": (n, c, h, w),
                "patch_locations": (n, k, 2), "patch_attns": (n, k)}
    assert {key: tuple(v.shape) for key, v in out.items()} == expected
    for key, v in out.items():
        assert torch.isfinite(v.float()).all(), key
    assert out["patch_locations"].dtype == torch.int64
    for key in ("y_global", "y_local", "y_fusion", "saliency_map", "patch_attns"):
        assert ((out[key] >= 0) & (out[key] <= 1)).all(), key
    torch.testing.assert_close(out["patch_attns"].sum(1), torch.ones(n))
    loc = out["patch_locations"]
    assert (loc >= 0).all() and (loc[..., 0] <= cfg.input_shape[0] - 1).all()
    assert (loc[..., 1] <= cfg.input_shape[1] - 1).all()


def _grads(model):
    return {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}


@pytest.mark.parametrize("name", ["tiny", pytest.param("cpu-small", marks=pytest.mark.slow),
                                  pytest.param("paper", marks=pytest.mark.slow)])
def test_gradient_reaches_every_parameter(name):
    """Training mode, the paper's loss (all three heads): every parameter gets a gradient."""
    torch.set_num_threads(2)
    cfg = CONFIGS[name]
    model = build_gmic(name).train()
    out = model(_cheap_input(cfg, 2))
    assert out["y_fusion"].shape == (2, cfg.num_classes)
    target = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    loss = sum(torch.nn.functional.binary_cross_entropy(out[k], target)
               for k in ("y_global", "y_local", "y_fusion"))
    assert torch.isfinite(loss)
    loss.backward()
    names = {n for n, _ in model.named_parameters()}
    assert _grads(model) == names, sorted(names - _grads(model))


def test_gradient_paths_per_output():
    """y_fusion trains global + local + attention + fusion; y_local skips the global net; y_global
    reaches only the global module (patch selection is an argmax, no gradient)."""
    torch.set_num_threads(2)
    cfg = MINI
    x = _cheap_input(cfg, 2, seed=1)
    names = {n for n, _ in build_gmic(MINI).named_parameters()}
    groups = {g: {n for n in names if n.startswith(g)} for g in
              ("ds_net", "left_postprocess_net", "dn_resnet", "mil_attn", "classifier_linear", "fusion_dnn")}
    expected = {
        "y_fusion": names - groups["left_postprocess_net"] - groups["classifier_linear"],
        "y_local": groups["dn_resnet"] | groups["mil_attn"] | groups["classifier_linear"],
        "y_global": groups["ds_net"] | groups["left_postprocess_net"],
    }
    for key, want in expected.items():
        torch.manual_seed(0)
        model = build_gmic(MINI).train()
        model(x)[key].sum().backward()
        assert _grads(model) == want, (key, sorted(want ^ _grads(model)))


def test_feature_extraction_freezes_backbones():
    torch.set_num_threads(2)
    model = build_gmic(MINI).train()
    groups = model.global_parameters() + model.local_parameters() + model.head_parameters()
    assert len(groups) == len(list(model.parameters())) and len({id(p) for p in groups}) == len(groups)
    model.freeze_backbones()
    before = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    model(_cheap_input(MINI, 2))["y_fusion"].sum().backward()
    assert all(p.grad is None for p in model.global_parameters() + model.local_parameters())
    assert all(p.grad is not None for n, p in model.named_parameters()
               if n.startswith(("mil_attn", "fusion_dnn")))
    for k, v in model.state_dict().items():  # frozen BatchNorms keep their statistics
        if k in before:
            assert torch.equal(v, before[k]), k
    model.freeze_backbones(False)
    assert all(p.requires_grad for p in model.parameters()) and model.ds_net.training


def test_forward_is_stateless_and_tensor_only(monkeypatch):
    """No numpy, .cpu(), .item() in forward (device-agnostic, no host syncs); nothing stored on self."""
    torch.set_num_threads(2)
    model = build_gmic(MINI).eval()
    x = _cheap_input(MINI, 2)
    attrs = set(vars(model))
    with torch.no_grad():
        expected = model(x)
    for method in ("numpy", "cpu", "item", "tolist"):
        monkeypatch.setattr(torch.Tensor, method, _forbidden(method))
    with torch.no_grad():
        out = model(x)
    monkeypatch.undo()
    assert set(vars(model)) == attrs
    for k in OUTPUT_KEYS:
        assert torch.equal(out[k], expected[k]), k


def _forbidden(name):
    def fail(*_a, **_k):
        raise AssertionError(f"Tensor.{name} called inside forward")
    return fail


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    model = build_gmic("cpu-small").eval()
    x = _cheap_input(CONFIGS["cpu-small"], 2)
    with torch.no_grad():
        cpu = model(x)
        gpu = model.cuda()(x.cuda())
    for k in OUTPUT_KEYS:
        assert gpu[k].device.type == "cuda"
        torch.testing.assert_close(gpu[k].cpu(), cpu[k], atol=1e-4, rtol=1e-4)


def test_config_validation():
    with pytest.raises(InputError, match="cam_size"):
        GMICConfig(input_shape=(512, 320), cam_size=(16, 10))
    with pytest.raises(InputError, match="percent_t"):
        GMICConfig(input_shape=(512, 320), cam_size=(8, 5), crop_shape=(64, 64), percent_t=0.001)
    with pytest.raises(InputError, match="crop_shape"):
        GMICConfig(input_shape=(512, 320), cam_size=(8, 5), crop_shape=(600, 64))
    with pytest.raises(InputError, match="unknown"):
        build_gmic("resnet50")
    with pytest.raises(InputError, match=r"\(N, 1, H, W\)"):
        build_gmic("tiny")(torch.zeros(1, 3, 512, 320))
    with pytest.raises(dataclasses.FrozenInstanceError):
        CONFIGS["paper"].num_patches = 3


# --- brute-force references for the non-learned steps -------------------------------------------


def _brute_greedy(score: np.ndarray, window, k):
    s = score.astype(np.float64).copy()
    h, w = s.shape
    wh, ww = window
    picks = []
    for _ in range(k):
        best, arg = -np.inf, None
        for r in range(h - wh + 1):          # row-major: the first maximum wins
            for c in range(w - ww + 1):
                v = s[r:r + wh, c:c + ww].mean()
                if v > best + 1e-9:
                    best, arg = v, (r, c)
        picks.append(arg)
        s[arg[0]:arg[0] + wh, arg[1]:arg[1] + ww] = 0.0
    return np.array(picks)


@pytest.mark.parametrize("seed", range(5))
def test_greedy_roi_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    h, w = rng.integers(6, 14, size=2)
    window = tuple(int(v) for v in rng.integers(1, 4, size=2))
    # quantised values make exact ties common; dyadic values keep the window means exact
    score = rng.integers(0, 4, size=(2, 1, h, w)) / 4.0
    got = greedy_roi_cells(torch.from_numpy(score).float(), window, 5).numpy()
    for i in range(2):
        np.testing.assert_array_equal(got[i], _brute_greedy(score[i, 0], window, 5))


def _official_style_crop(img: np.ndarray, r: int, c: int, shape) -> np.ndarray:
    """Reference semantics: fill with the image minimum, paste the valid part bottom-right."""
    ch, cw = shape
    hh, ww = img.shape
    r0, r1 = min(max(r, 0), hh), min(max(r + ch, 0), hh)
    c0, c1 = min(max(c, 0), ww), min(max(c + cw, 0), ww)
    out = np.full(shape, img.min(), dtype=img.dtype)
    out[ch - (r1 - r0):, cw - (c1 - c0):] = img[r0:r1, c0:c1]
    return out


def test_crops_match_reference_semantics_including_edges():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 1, 40, 30)).astype(np.float32)
    locs = np.array([[[0, 0], [30, 25], [39, 0], [5, 29]], [[10, 10], [32, 22], [0, 20], [31, 21]]])
    got = _gather_crops(torch.from_numpy(x), torch.from_numpy(locs), (9, 9)).numpy()
    for i in range(2):
        for j in range(4):
            np.testing.assert_array_equal(got[i, j], _official_style_crop(x[i, 0], *locs[i, j], (9, 9)))


def test_crops_are_differentiable_in_the_input():
    x = torch.randn(1, 1, 20, 16, requires_grad=True)
    locs = torch.tensor([[[2, 3], [4, 5]]])
    _gather_crops(x, locs, (5, 5)).sum().backward()
    coverage = torch.zeros(20, 16)
    coverage[2:7, 3:8] += 1
    coverage[4:9, 5:10] += 1
    torch.testing.assert_close(x.grad[0, 0], coverage)


def test_model_crops_leaving_the_image():
    """A grid that does not divide the input lets crops run past the edge (600 -> 10 cells of 60 px)."""
    torch.set_num_threads(2)
    cfg = GMICConfig(input_shape=(600, 400), cam_size=(10, 7), crop_shape=(64, 64), num_patches=30)
    model = GMIC(cfg).eval()
    x = _cheap_input(cfg, 1, seed=5)
    with torch.no_grad():
        out = model(x, intermediates=True)
    loc = out["patch_locations"][0].numpy()
    assert ((loc[:, 0] + 64 > 600) | (loc[:, 1] + 64 > 400)).any()  # 30 of 70 windows: some at the edge
    for j, (r, c) in enumerate(loc):
        np.testing.assert_array_equal(out["crops"][0, j].numpy(),
                                      _official_style_crop(x[0, 0].numpy(), r, c, (64, 64)))
    assert torch.isfinite(out["y_fusion"]).all()
