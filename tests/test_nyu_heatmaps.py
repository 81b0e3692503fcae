"""NYU patch classifier (DenseNet-121, TF-SAME padding) and the sliding-window heatmap producer:
the official fixture (rule weights -> official outputs), checkpoint formats, and brute-force
references for the patch grid and the accumulation."""
from __future__ import annotations

import hashlib
import json
import random

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from core.errors import InputError
from models.inference.heatmaps import (
    HeatmapConfig,
    accumulate_heatmap,
    patch_origins,
    patch_probabilities,
    produce_heatmaps,
    standardise_float64,
    stride_list,
)
from models.networks.nyu_patch import (
    PatchDenseNet121,
    build_nyu_patch,
    checkpoint_filter_fn,
    load_nyu_patch_checkpoint,
    optimize_for_inference,
    same_padding,
)
from tests.reference_fixtures import import_rule, load_outputs, reference_dir
from tests.reference_fixtures import rule_state as state_from_rule

STAGES = ("conv0", "norm0", "pool0", "denseblock1", "transition1", "denseblock2", "transition2",
          "denseblock3", "transition3", "denseblock4", "norm5")



@pytest.fixture(scope="module")
def fixture_dir(shared_dir):
    return reference_dir(shared_dir, "nyu_dmv_reference")


@pytest.fixture(scope="module")
def reference(fixture_dir):
    return load_outputs(fixture_dir)


@pytest.fixture(scope="module")
def official_keys(fixture_dir):
    return json.loads((fixture_dir / "keys.json").read_text())["networks"]["DenseNet121_patch_model"]["keys"]


@pytest.fixture(scope="module")
def rule_state(fixture_dir, official_keys):
    rule = import_rule(fixture_dir / "weight_rule.py", "nyu_weight_rule")
    return state_from_rule(rule, official_keys)


@pytest.fixture(scope="module")
def model(rule_state):
    m = PatchDenseNet121()
    m.load_state_dict(rule_state, strict=True)
    return m.eval()


@pytest.fixture(scope="module")
def step_image(fixture_dir, reference):
    image = import_rule(fixture_dir / "input_rule.py", "nyu_input_rule").make_heatmap_step_image()
    assert hashlib.sha256(image.tobytes()).hexdigest() == str(reference["heatmap_input_sha256_float32"])
    return image


@pytest.fixture
def threads(request):
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)


def _batch(step_image, reference) -> torch.Tensor:
    """The fixture's 4-patch batch: float64 standardisation, float32 patches, 3 equal channels."""
    image = standardise_float64(step_image)
    patches = np.stack([image[r:r + 256, c:c + 256] for r, c in reference["patch_batch_origins"]])
    return torch.from_numpy(patches.astype(np.float32))[:, None].expand(-1, 3, -1, -1).contiguous()


# --- the network ----------------------------------------------------------------------------------


def test_state_dict_is_official(official_keys, rule_state):
    own = PatchDenseNet121().state_dict()
    assert [(k, tuple(v.shape)) for k, v in own.items()] == [(e["key"], tuple(e["shape"])) for e in official_keys]
    for e in official_keys[:40] + official_keys[-4:]:   # the rule generator still draws the same stream
        assert hashlib.sha256(rule_state[e["key"]].numpy().tobytes()).hexdigest() == e["rule_sha256"]


@pytest.mark.parametrize("size,kernel,stride,expected", [
    (256, 7, 2, (2, 3)), (128, 3, 2, (0, 1)), (64, 3, 1, (1, 1)), (64, 1, 1, (0, 0)), (7, 3, 2, (1, 1))])
def test_same_padding_is_tensorflows(size, kernel, stride, expected):
    assert same_padding(size, kernel, stride) == expected
    out = -(-size // stride)                                   # TF SAME: ceil(size / stride)
    assert (size + sum(expected) - kernel) // stride + 1 == out


@pytest.mark.parametrize("threads", [1, 2], indirect=True)
def test_patch_batch_matches_official(model, step_image, reference, threads):
    x = _batch(step_image, reference)
    assert np.array_equal(reference["heatmap_patch_origins"][reference["patch_batch_indices"]],
                          reference["patch_batch_origins"])
    xs = x.double().flatten(1)                                 # all three channels
    got = torch.stack([xs.mean(1), xs.std(1, correction=0), xs.amin(1), xs.amax(1), xs.sum(1)], 1).numpy()
    np.testing.assert_allclose(got, reference["patch_batch_input_stats"], rtol=1e-5, atol=1e-5)
    stats, hooks = {}, []
    for stage in STAGES:
        def hook(_m, _inp, out, stage=stage):
            o = out.detach().double().flatten(1)
            stats[stage] = (tuple(out.shape), torch.stack(
                [o.mean(1), o.std(1, correction=0), o.amin(1), o.amax(1), o.sum(1)], 1).numpy())
        hooks.append(model.features.get_submodule(stage).register_forward_hook(hook))
    try:
        with torch.no_grad():
            out = model(x)
    finally:
        for h in hooks:
            h.remove()
    np.testing.assert_allclose(out["logits"].numpy(), reference["patch_logits"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out["probs"].numpy(), reference["patch_softmax"], rtol=0, atol=1e-5)
    for stage in STAGES:
        shape, s = stats[stage]
        assert shape == tuple(reference[f"patch_shape_{stage}"])
        np.testing.assert_allclose(s, reference[f"patch_stats_{stage}"], rtol=1e-5, atol=1e-4, err_msg=stage)


def test_optimized_copy_matches_official(model, step_image, reference):
    fast = optimize_for_inference(model)
    x = _batch(step_image, reference)[:, :1].contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        probs = fast(x)["probs"].numpy()
    np.testing.assert_allclose(probs, reference["patch_softmax"], rtol=0, atol=1e-5)
    assert fast.features.conv0.in_channels == 1
    assert model.features.conv0.in_channels == 3                  # the original is untouched


# --- checkpoints ----------------------------------------------------------------------------------


def _old_names(state):
    """torchvision <= 0.2.1 spelling: denselayerN.norm1 -> denselayerN.norm.1."""
    out = {}
    for k, v in state.items():
        for a, b in (("norm1", "norm.1"), ("conv1", "conv.1"), ("norm2", "norm.2"), ("conv2", "conv.2")):
            if "denselayer" in k and f".{a}." in k:
                k = k.replace(f".{a}.", f".{b}.")
        out[k] = v
    return out


@pytest.mark.parametrize("fmt", ["bare", "model", "legacy", "old_names", "densenet_prefix"])
def test_checkpoint_formats_load_strictly(tmp_path, rule_state, fmt):
    path = tmp_path / "sample_patch_model.p"
    if fmt == "model":
        torch.save({"model": rule_state}, path)
    elif fmt == "legacy":
        torch.save(rule_state, path, _use_new_zipfile_serialization=False)
    elif fmt == "old_names":
        old = _old_names(rule_state)
        assert "features.denseblock1.denselayer1.norm.1.weight" in old
        torch.save(old, path, _use_new_zipfile_serialization=False)
    elif fmt == "densenet_prefix":
        torch.save({f"densenet.{k}": v for k, v in rule_state.items()}, path)
    else:
        torch.save(rule_state, path)
    loaded = load_nyu_patch_checkpoint(path)
    assert not loaded.training
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, rule_state[k]), k


def test_filter_maps_old_names_only_in_dense_layers():
    sd = {"features.denseblock2.denselayer11.conv.2.weight": 1, "features.transition1.conv.weight": 2}
    assert checkpoint_filter_fn(sd) == {"features.denseblock2.denselayer11.conv2.weight": 1,
                                        "features.transition1.conv.weight": 2}


@pytest.mark.parametrize("content", ["gmic", "truncated", "list", "missing"])
def test_unknown_checkpoint_is_one_input_error(tmp_path, rule_state, content):
    path = tmp_path / "weights.p"
    if content == "gmic":
        torch.save({"ds_net.first_conv.weight": torch.zeros(16, 1, 7, 7)}, path)
    elif content == "truncated":
        path.write_bytes(b"PK\x03\x04 not a torch file")
    elif content == "list":
        torch.save([torch.zeros(2)], path)
    with pytest.raises(InputError) as err:
        build_nyu_patch(weights=path)
    assert "\n" not in str(err.value) and str(path) in str(err.value)


def test_wrong_shapes_are_one_input_error(tmp_path, rule_state):
    bad = dict(rule_state, **{"classifier.weight": torch.zeros(2, 1024)})
    torch.save(bad, tmp_path / "p.p")
    with pytest.raises(InputError, match="wrong shape") as err:
        load_nyu_patch_checkpoint(tmp_path / "p.p")
    assert "\n" not in str(err.value)


# --- the patch grid and the accumulation ----------------------------------------------------------


def test_stride_lists_and_origins_match_official(reference):
    rng = random.Random(0)
    rows = stride_list(1000, rng=rng)
    cols = stride_list(800, rng=rng)
    assert rows == reference["heatmap_width_stride_list"].tolist()
    assert cols == reference["heatmap_length_stride_list"].tolist()
    assert np.array_equal(patch_origins(rows, cols), reference["heatmap_patch_origins"])


def _brute_origins(shape, rows, cols, p=256):
    """The official walk restated: x steps down the rows, snapping back to 0 after the last."""
    out, y = [], 0
    for sy in list(cols) + [0]:
        x = 0
        for sx in list(rows) + [-(shape[0] - p)]:
            out.append((x, y))
            x += sx
        y += sy
    return np.array(out)


@settings(max_examples=200, deadline=None)
@given(size=st.integers(256, 4000), patch=st.sampled_from([64, 256]), stride=st.integers(10, 200),
       seed=st.integers(0, 2 ** 16))
def test_stride_list_invariants(size, patch, stride, seed):
    if size < patch:
        return
    rng = random.Random(seed)
    strides = stride_list(size, patch_size=patch, stride=stride, rng=rng)
    assert sum(strides) == size - patch                      # the last patch is flush with the border
    assert all(0 < s <= stride for s in strides)
    assert max(strides, default=0) - min(strides, default=0) <= 1
    if (size - patch) % stride == 0:
        assert strides == [stride] * ((size - patch) // stride)
        assert rng.random() == random.Random(seed).random()  # no draw consumed
    cols = strides[:3]                                       # keep the brute-force walk short
    assert np.array_equal(patch_origins(strides, cols), _brute_origins((size, size), strides, cols, patch))


def test_stride_list_rejects_small_images():
    with pytest.raises(InputError, match="shorter than the 256 px patch"):
        stride_list(200, rng=random.Random(0))


def test_accumulation_of_official_probs_is_exact(reference):
    """The fixture's patch softmax through our accumulation gives the official heatmaps exactly."""
    origins = reference["heatmap_patch_origins"]
    probs = reference["heatmap_all_prob"].astype(np.float32)
    for kind, col in (("malignant", 0), ("benign", 1)):
        heat = accumulate_heatmap(probs[:, col], origins, (1000, 800))
        assert heat.dtype == np.float32
        np.testing.assert_allclose(heat.reshape(50, 20, 40, 20).mean((1, 3)),
                                   reference[f"heatmap_{kind}_block20_mean"], rtol=0, atol=1e-6)
        np.testing.assert_allclose(_stats(heat), reference[f"heatmap_{kind}_stats"], rtol=1e-5)
    heat = accumulate_heatmap(probs[:, 0], origins, (1000, 800))
    np.testing.assert_array_equal(heat[0], reference["heatmap_malignant_row0"].astype(np.float32))
    np.testing.assert_array_equal(heat[:, 0], reference["heatmap_malignant_col0"].astype(np.float32))


def _stats(a):
    a = a.astype(np.float64).ravel()
    return np.array([[a.mean(), a.std(), a.min(), a.max(), a.sum()]])


def test_batch_size_does_not_change_probabilities(model, step_image, reference):
    origins = reference["patch_batch_origins"][:2]
    image = standardise_float64(step_image)
    one = patch_probabilities(model, image, origins, batch_size=1)
    two = patch_probabilities(model, image, origins, batch_size=2)
    np.testing.assert_allclose(one, two, rtol=0, atol=1e-6)
    np.testing.assert_allclose(one, reference["patch_softmax"][:2], rtol=0, atol=1e-5)


@pytest.mark.slow
def test_heatmaps_match_official(model, step_image, reference):
    """All 108 patches of the 1000 x 800 image (batched, the optimized copy, 2 threads)."""
    torch.set_num_threads(2)
    seen = []
    h = produce_heatmaps(optimize_for_inference(model), step_image, rng=random.Random(0),
                         config=HeatmapConfig(batch_size=54), progress=lambda d, t, m: seen.append((d, t)))
    assert seen[-1] == (108, 108)
    assert h.row_strides == tuple(reference["heatmap_width_stride_list"])
    assert h.col_strides == tuple(reference["heatmap_length_stride_list"])
    assert np.array_equal(h.origins, reference["heatmap_patch_origins"])
    np.testing.assert_allclose(h.probs, reference["heatmap_all_prob"], rtol=0, atol=1e-5)
    for kind in ("malignant", "benign"):
        heat = getattr(h, kind)
        assert heat.shape == (1000, 800) and heat.dtype == np.float32
        np.testing.assert_allclose(heat.reshape(50, 20, 40, 20).mean((1, 3)),
                                   reference[f"heatmap_{kind}_block20_mean"], rtol=0, atol=1e-5)
        np.testing.assert_allclose(_stats(heat), reference[f"heatmap_{kind}_stats"], rtol=1e-5)
    np.testing.assert_allclose(h.malignant[0], reference["heatmap_malignant_row0"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(h.malignant[:, 0], reference["heatmap_malignant_col0"], rtol=0, atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_probabilities_match_cpu(model, step_image, reference):
    image = standardise_float64(step_image)
    origins = reference["patch_batch_origins"]
    gpu = patch_probabilities(optimize_for_inference(model).cuda(), image, origins, batch_size=2)
    np.testing.assert_allclose(gpu, reference["patch_softmax"], rtol=0, atol=1e-4)
