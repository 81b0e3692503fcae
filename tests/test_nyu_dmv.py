"""NYU deep multi-view CNN (breast_cancer_classifier): the official fixture (rule weights ->
official outputs) for the view-wise image-only and image+heatmaps models and the single-image
model, strict loading of every official checkpoint format, and the breast-level aggregation."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

from core.errors import InputError
from models.networks.nyu_dmv import (
    LABELS,
    VIEWS,
    DMVConfig,
    ImageBreastModel,
    SingleImageBreastModel,
    SplitBreastModel,
    breast_probabilities,
    build_nyu_dmv,
    build_nyu_single,
    checkpoint_filter_fn,
    load_nyu_dmv_checkpoint,
    load_nyu_single_checkpoint,
    load_nyu_single_views,
    single_state_from_image_state,
)
from models.networks.resnet22 import STAGE_NAMES
from tests.reference_fixtures import import_rule, load_outputs, reference_dir, rule_state

NETWORKS = {"SplitBreastModel": SplitBreastModel, "ImageBreastModel": ImageBreastModel,
            "SingleImageBreastModel": SingleImageBreastModel}



@pytest.fixture(scope="module")
def fixture_dir(shared_dir):
    return reference_dir(shared_dir, "nyu_dmv_reference")


@pytest.fixture(scope="module")
def reference(fixture_dir):
    return load_outputs(fixture_dir)


@pytest.fixture(scope="module")
def keys(fixture_dir):
    return json.loads((fixture_dir / "keys.json").read_text())["networks"]


@pytest.fixture(scope="module")
def rule(fixture_dir):
    return import_rule(fixture_dir / "weight_rule.py", "nyu_dmv_weight_rule")




@pytest.fixture(scope="module")
def split_states(rule, keys):
    return {ch: rule_state(rule, keys[f"SplitBreastModel_{ch}ch"]["keys"]) for ch in (1, 3)}


@pytest.fixture(scope="module")
def image_states(rule, keys):
    return {ch: rule_state(rule, keys[f"ImageBreastModel_{ch}ch"]["keys"]) for ch in (1, 3)}


@pytest.fixture(scope="module")
def exam_inputs(fixture_dir, reference):
    """dict channels -> dict view -> (1, C, H, W): the image, or [image, benign, malignant]."""
    rule = import_rule(fixture_dir / "input_rule.py", "nyu_dmv_input_rule")
    exam, heat = rule.make_exam(), rule.make_exam_heatmaps()
    for v in VIEWS:
        tag = v.replace("-", "")
        assert hashlib.sha256(exam[v].tobytes()).hexdigest() == str(reference[f"input_sha256_{tag}"])
        assert hashlib.sha256(heat[v].tobytes()).hexdigest() == str(reference[f"heatmaps_sha256_{tag}"])
    return {1: {v: torch.from_numpy(exam[v])[None, None] for v in VIEWS},
            3: {v: torch.from_numpy(np.concatenate([exam[v][None], heat[v]]))[None] for v in VIEWS}}


@pytest.fixture
def threads(request):
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)


# --- state dicts ----------------------------------------------------------------------------------


@pytest.mark.parametrize("network", ["SplitBreastModel_1ch", "SplitBreastModel_3ch", "ImageBreastModel_1ch",
                                     "ImageBreastModel_3ch", "SingleImageBreastModel_1ch",
                                     "SingleImageBreastModel_3ch"])
def test_state_dict_is_official(keys, network):
    name, ch = network.rsplit("_", 1)
    model = NETWORKS[name](DMVConfig(input_channels=int(ch[0])))
    own = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    assert own == [(e["key"], tuple(e["shape"])) for e in keys[network]["keys"]]
    assert len(own) == keys[network]["counts"]["keys"]


def test_rule_generator_still_draws_the_same_stream(rule, keys):
    for e in keys["SplitBreastModel_1ch"]["keys"][:30] + keys["SplitBreastModel_1ch"]["keys"][-8:]:
        value = rule.rule_array(e["key"], e["shape"])
        assert hashlib.sha256(value.tobytes()).hexdigest() == e["rule_sha256"]


def test_columns_are_shared_under_three_names(split_states):
    model = SplitBreastModel()
    model.load_state_dict(split_states[1], strict=True)
    fv = model.four_view_resnet
    assert fv.l_cc is fv.cc is fv.r_cc and fv.l_mlo is fv.mlo is fv.r_mlo and fv.cc is not fv.mlo


def test_single_state_is_a_slice_of_the_image_model(image_states, keys):
    for ch in (1, 3):
        for view in VIEWS:
            state = single_state_from_image_state(image_states[ch], view)
            model = SingleImageBreastModel(DMVConfig(input_channels=ch))
            model.load_state_dict(state, strict=True)
            key = view.lower().replace("-", "")
            angle = view.split("-")[1].lower()
            assert torch.equal(model.output_layer.fc_layer.weight,
                               image_states[ch][f"output_layer_{key}.fc_layer.weight"][:4])
            assert torch.equal(model.view_resnet.first_conv.weight,
                               image_states[ch][f"four_view_resnet.{angle}.first_conv.weight"])


# --- the fixture ----------------------------------------------------------------------------------


def _stats(t):
    o = t.detach().double().flatten(1)
    return torch.stack([o.mean(1), o.std(1, correction=0), o.amin(1), o.amax(1), o.sum(1)], 1).numpy()


@pytest.mark.parametrize("threads", [1, 2], indirect=True)
@pytest.mark.parametrize("ch", [1, 3])
def test_split_model_matches_official(split_states, exam_inputs, reference, ch, threads):
    model = SplitBreastModel(DMVConfig(input_channels=ch)).eval()
    model.load_state_dict(split_states[ch], strict=True)
    x = exam_inputs[ch]
    with torch.no_grad():
        out = model(x, intermediates=True)
        # stage statistics of one view per column (the same module serves both sides)
        stages = {v: model.four_view_resnet.column(v).forward_intermediates(x[v]) for v in ("R-CC", "L-MLO")}
    p = f"split{ch}_"
    for side in ("CC", "MLO"):
        np.testing.assert_allclose(out[side].numpy(), reference[p + f"log_softmax_{side}"], rtol=0, atol=1e-5)
        np.testing.assert_allclose(out[f"logits_{side.lower()}"].numpy(), reference[p + f"logits_{side}"],
                                   rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(out[f"fc1_{side.lower()}"].numpy(), reference[p + f"fc1_relu_input_{side}"],
                                   rtol=1e-5, atol=1e-6)
    for v in VIEWS:
        np.testing.assert_allclose(out[f"pooled_{v}"].numpy(), reference[p + "pooled_" + v.replace("-", "")],
                                   rtol=1e-5, atol=1e-6)
    for v, inter in stages.items():
        for stage in STAGE_NAMES:
            tag = f"{v.replace('-', '')}_{stage}"
            assert tuple(inter[stage].shape) == tuple(reference[p + f"shape_{tag}"])
            np.testing.assert_allclose(_stats(inter[stage]), reference[p + f"stats_{tag}"], rtol=1e-5, atol=1e-4)
    # the heads in compute_batch_predictions order, then the breast level (mean of CC and MLO)
    assert [str(s) for s in reference["head_order"]] == [f"{lab}|{a}" for lab in LABELS for a in ("CC", "MLO")]
    heads = torch.stack([out[a][:, i, 1].exp() for i in range(4) for a in ("CC", "MLO")], 1)
    np.testing.assert_allclose(heads.numpy(), reference[p + "head_prob_positive"], rtol=0, atol=1e-5)
    assert tuple(str(s) for s in reference["breast_level_order"]) == LABELS
    np.testing.assert_allclose(out["breast_probs"].numpy(), reference[p + "breast_level"], rtol=0, atol=1e-5)


@pytest.mark.parametrize("threads", [1, 2], indirect=True)
@pytest.mark.parametrize("ch", [1, 3])
def test_single_image_model_matches_official(image_states, exam_inputs, reference, ch, threads):
    views = VIEWS if threads == 2 else ("R-CC", "L-MLO")   # one view per column on 1 thread: time
    for view in views:
        model = SingleImageBreastModel(DMVConfig(input_channels=ch)).eval()
        model.load_state_dict(single_state_from_image_state(image_states[ch], view), strict=True)
        with torch.no_grad():
            out = model(exam_inputs[ch][view])
        tag = f"single{ch}_{view.replace('-', '')}_"
        np.testing.assert_allclose(out["log_softmax"].numpy(), reference[tag + "log_softmax"], rtol=0, atol=1e-5)
        np.testing.assert_allclose(out["probs"].numpy(), reference[tag + "benign_malignant"], rtol=0, atol=1e-5)


def test_breast_level_is_the_mean_of_the_two_heads(reference):
    """From the fixture's own head outputs: per label, (P_cc + P_mlo) / 2, labels in official order."""
    for ch in (1, 3):
        cc = torch.from_numpy(reference[f"split{ch}_log_softmax_CC"])
        mlo = torch.from_numpy(reference[f"split{ch}_log_softmax_MLO"])
        got = breast_probabilities(cc, mlo).numpy()
        np.testing.assert_allclose(got, reference[f"split{ch}_breast_level"], rtol=0, atol=1e-7)
        heads = reference[f"split{ch}_head_prob_positive"].reshape(1, 4, 2)
        np.testing.assert_allclose(got, heads.mean(-1), rtol=0, atol=1e-7)


def test_small_inputs_run_and_batch(split_states):
    """Batch of two small exams: shapes, probabilities in (0, 1), each row equals its own run."""
    torch.manual_seed(0)
    model = SplitBreastModel().eval()
    model.load_state_dict(split_states[1], strict=True)
    x = {v: torch.randn(2, 1, 320, 256) for v in VIEWS}
    with torch.no_grad():
        both = model(x)
        first = model({v: t[:1] for v, t in x.items()})
    assert both["CC"].shape == (2, 4, 2) and both["breast_probs"].shape == (2, 4)
    assert torch.allclose(both["CC"].exp().sum(-1), torch.ones(2, 4), atol=1e-6)
    np.testing.assert_allclose(both["breast_probs"][:1].numpy(), first["breast_probs"].numpy(), atol=1e-6)


def test_single_model_keeps_the_whole_batch():
    """The official forward's [:2] truncates the batch; ours returns every row."""
    model = SingleImageBreastModel().eval()
    with torch.no_grad():
        out = model(torch.randn(3, 1, 200, 160))
    assert out["log_softmax"].shape == (3, 2, 2) and out["probs"].shape == (3, 2)


def test_bad_inputs_are_input_errors():
    model = SplitBreastModel(DMVConfig(input_channels=3))
    with pytest.raises(InputError, match="lacks"):
        model({"L-CC": torch.zeros(1, 3, 64, 64)})
    with pytest.raises(InputError, match=r"\(N, 3, H, W\)"):
        model({v: torch.zeros(1, 1, 64, 64) for v in VIEWS})
    with pytest.raises(InputError, match="input_channels"):
        DMVConfig(input_channels=2)
    with pytest.raises(InputError, match="view is"):
        build_nyu_single(view="L-XX")


# --- checkpoints ----------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["model", "bare", "legacy", "canonical_only"])
def test_view_wise_checkpoint_formats(tmp_path, split_states, fmt):
    state = split_states[3]
    path = tmp_path / "sample_imageheatmaps_model.p"
    if fmt == "model":
        torch.save({"model": state}, path)
    elif fmt == "bare":
        torch.save(state, path)
    elif fmt == "legacy":
        torch.save({"model": state}, path, _use_new_zipfile_serialization=False)
    else:                                    # a port that saved each column once
        aliases = ("four_view_resnet.l_", "four_view_resnet.r_")
        torch.save({k: v for k, v in state.items() if not k.startswith(aliases)}, path)
    model = load_nyu_dmv_checkpoint(path, "image-heatmaps")
    assert not model.training
    own = model.state_dict()
    assert list(own) == list(state)
    assert all(torch.equal(own[k], state[k]) for k in state)


@pytest.mark.parametrize("fmt", ["model", "legacy", "single"])
def test_single_image_checkpoint_formats(tmp_path, image_states, fmt):
    path = tmp_path / "ImageOnly__ModeImage_weights.p"
    if fmt == "single":
        torch.save(single_state_from_image_state(image_states[1], "R-MLO"), path)
    else:
        torch.save({"model": image_states[1]}, path, _use_new_zipfile_serialization=(fmt == "model"))
    model = load_nyu_single_checkpoint(path, "R-MLO", "image")
    expected = single_state_from_image_state(image_states[1], "R-MLO")
    assert all(torch.equal(v, expected[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("ch", [1, 3])
def test_four_views_from_one_read_score_each_row_with_its_views_model(tmp_path, image_states, ch):
    """`SingleImageViews` (what predict runs for nyu-single) equals the per-view single-image
    model that the fixture checks, row by row, whatever the views' order in the batch."""
    path = tmp_path / "ImageHeatmaps__ModeImage_weights.p"
    torch.save({"model": image_states[ch]}, path)
    views = load_nyu_single_views(path, "image", channels=ch)
    assert views.config.input_channels == ch
    order = ["R-MLO", "L-CC", "R-CC", "L-MLO", "L-CC"]
    x = torch.randn(len(order), ch, 96, 64, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        got = views(x, order)["probs"]
        for i, view in enumerate(order):
            one = load_nyu_single_checkpoint(path, view, "image-heatmaps" if ch == 3 else "image")
            torch.testing.assert_close(got[i], one(x[i:i + 1])["probs"][0], rtol=0, atol=1e-6)
    with pytest.raises(InputError, match="one per row"):
        views(x, order[:2])


def test_filter_fills_aliases_from_any_name():
    t = torch.zeros(1)
    out = checkpoint_filter_fn({"model": {"module.four_view_resnet.r_mlo.final_bn.bias": t}})
    assert set(out) == {f"four_view_resnet.{n}.final_bn.bias" for n in ("mlo", "l_mlo", "r_mlo")}


@pytest.mark.parametrize("content", ["patch_model", "wrong_channels", "not_torch", "tensor", "missing"])
def test_unknown_checkpoint_is_one_input_error(tmp_path, split_states, content):
    path = tmp_path / "weights.p"
    if content == "patch_model":
        torch.save({"features.conv0.weight": torch.zeros(64, 3, 7, 7)}, path)
    elif content == "wrong_channels":                 # an image-only file for the heatmaps model
        torch.save({"model": split_states[1]}, path)
    elif content == "not_torch":
        path.write_text("hello")
    elif content == "tensor":
        torch.save(torch.zeros(3), path)
    with pytest.raises(InputError) as err:
        build_nyu_dmv("image-heatmaps", weights=path)
    assert "\n" not in str(err.value) and str(path) in str(err.value)
    with pytest.raises(InputError) as err:
        load_nyu_single_checkpoint(path, "L-CC", "image-heatmaps")
    assert "\n" not in str(err.value)
