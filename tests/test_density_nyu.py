"""models.networks.density_nyu against the official fixture (shared/data/nyu_density/expected.json).

Every count, float32 statistic, feature and probability is compared with what the official code
produced under NumPy 1.14.3 ('reference'), NumPy 2.4.6 ('modern') and the implementation-free
'exact' definition, on the sample exam and three transformed copies of it.
"""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from PIL import Image

from core.errors import InputError
from core.density import histogram as hist
from models.networks import density_nyu as nyu

CASES = ("baseline", "gamma_0.8", "hflip", "swap_lr")
PROB_TOL = 1e-5   # same arithmetic as the environment: ~5e-8 expected (brief: 1e-4)


@pytest.fixture(scope="module")
def expected(nyu_dir):
    return json.loads((nyu_dir / "expected.json").read_text())


def _sha(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


@pytest.fixture(scope="module")
def cases(nyu_dir, expected):
    """The four exams, each view checked against the fixture's pixel sha256."""
    base = {v: np.array(Image.open(nyu_dir / f"{v}.png")) for v in hist.VIEWS}
    for v, img in base.items():
        assert img.shape == (2600, 2000) and img.dtype == np.uint8
        assert _sha(img) == expected["files"][f"{v}.png"]["pixel_sha256"], v
    extra = expected["extra_cases"]
    k = np.arange(256)
    lut = np.clip(np.round(255.0 * (k / 255.0) ** 0.8), 0, 255).astype(np.uint8)   # round half even
    assert lut.tolist() == extra["gamma_0.8"]["gamma_lut_uint8"]
    out = {
        "baseline": base,
        "gamma_0.8": {v: lut[img] for v, img in base.items()},
        "hflip": {v: img[:, ::-1] for v, img in base.items()},
        "swap_lr": {"L-CC": base["R-CC"], "R-CC": base["L-CC"], "L-MLO": base["R-MLO"], "R-MLO": base["L-MLO"]},
    }
    for name in CASES[1:]:
        for v, img in out[name].items():
            assert _sha(img) == extra[name]["transformed_pixel_sha256"][v], (name, v)
    return out


def _case_expected(expected, name):
    return expected["histogram"] if name == "baseline" else expected["extra_cases"][name]


@pytest.fixture(scope="module")
def details(cases):
    return {(c, v, r): hist.histogram_details(cases[c][v], recipe=r)
            for c in CASES for v in hist.VIEWS for r in hist.RECIPES}


@pytest.fixture(scope="module")
def model(nyu_dir):
    return nyu.load_nyu_density(nyu_dir / "histogram_model.p")


# ------------------------------------------------------------------------------ histograms


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("recipe", hist.RECIPES)
def test_counts_and_float32_statistics(details, expected, case, recipe):
    per_view = _case_expected(expected, case)["per_view"]
    for v in hist.VIEWS:
        got, want = details[case, v, recipe], per_view[v][recipe]
        assert got.counts.tolist() == want["counts"], (case, v, recipe)
        assert got.counts.sum() == 2600 * 2000
        if recipe == "exact":
            continue
        assert got.mean == np.float32(want["mean_f32"]), (case, v)
        assert got.std == np.float32(want["std_f32"]), (case, v)
        assert np.float32(got.normalized_min) == np.float32(want["normalized_min"])
        assert np.float32(got.normalized_max) == np.float32(want["normalized_max"])
        if case == "baseline":
            key = "bin_edges_float64" if recipe == "reference" else "bin_edges_float32"
            dtype = np.float64 if recipe == "reference" else np.float32
            np.testing.assert_array_equal(got.bin_edges, np.array(want[key], dtype))


def test_edge_levels_go_where_the_fixture_says(details, expected):
    """Gray levels 51/102/153/204 sit on exact bin edges; each recipe sends them up or down."""
    for v in hist.VIEWS:
        for recipe in ("reference", "modern"):
            d = details["baseline", v, recipe]
            for level, where in expected["histogram"]["per_view"][v][recipe]["edge_level_went_to"].items():
                z = (np.float32(level) - d.mean) / d.std
                i = int(level) // (255 // 5) * 10          # the bin whose lower edge the level is on
                lower_edge = d.bin_edges[i]
                went_up = (np.float64(z) if recipe == "reference" else z) >= lower_edge
                assert went_up == (where == "upper"), (v, recipe, level)


@pytest.mark.parametrize("recipe", hist.RECIPES)
def test_feature_vector_baseline(cases, expected, recipe):
    feats = hist.exam_features(cases["baseline"], recipe=recipe)
    assert feats.dtype == np.float32 and feats.shape == (200,)
    want = np.array(expected["histogram"]["feature_vector_200"][recipe], dtype=np.float32)
    np.testing.assert_array_equal(feats, want)
    # Order L-CC, R-CC, L-MLO, R-MLO: block 1 is R-CC's histogram.
    np.testing.assert_array_equal(feats[50:100], hist.histogram_features(cases["baseline"]["R-CC"],
                                                                        recipe=recipe).astype(np.float32))


def test_hflip_changes_only_the_order_dependent_recipes(details):
    for v in hist.VIEWS:
        assert details["hflip", v, "exact"].counts.tolist() == details["baseline", v, "exact"].counts.tolist()
        assert details["hflip", v, "modern"].counts.tolist() == details["baseline", v, "modern"].counts.tolist()


def test_modern_equals_running_numpy_on_a_sample_view(cases):
    """The modern recipe *is* NumPy 2.x: same counts as a[...] -= mean; /= std; np.histogram."""
    if int(np.__version__.split(".")[0]) < 2:
        pytest.skip("needs NumPy 2.x")
    img = cases["gamma_0.8"]["L-MLO"]
    a = img.astype(np.float32)
    a -= a.mean()
    a /= a.std()
    np.testing.assert_array_equal(np.histogram(a, 50)[0], hist.histogram_counts(img, recipe="modern"))
    # and the float32 mean and std themselves, on odd sizes and gray-level ranges
    rng = np.random.default_rng(4)
    for shape, top in (((301, 207), 255), ((1000, 999), 4095), ((17, 3), 9)):
        img = rng.integers(0, top + 1, shape).astype(np.uint8 if top < 256 else np.uint16)
        a = img.astype(np.float32)
        d = hist.histogram_details(img, recipe="modern")
        assert d.mean == a.mean()
        a -= a.mean()
        assert d.std == a.std()


@pytest.mark.parametrize("n", [1, 5, 8, 13, 127, 128, 129, 1000, 8191, 8192, 8193, 100_003])
def test_float32_sum_emulation(n):
    x = np.random.default_rng(n).normal(3.0, 2.0, n).astype(np.float32)
    if int(np.__version__.split(".")[0]) >= 2:
        assert hist.numpy_float32_sum(x, recipe="modern") == x.sum()
    # 'reference' = a float32 running sum of the 8192-element chunks' pairwise sums.
    chunks = [hist.numpy_float32_sum(x[i:i + 8192], recipe="modern") for i in range(0, n, 8192)]
    acc = np.float32(0)
    for c in chunks:
        acc = np.float32(acc + c)
    assert hist.numpy_float32_sum(x, recipe="reference") == acc


def test_other_integer_types_and_sizes():
    """int32 / uint16 / int64, levels 100..1099 (no level on an exact edge): every recipe gives
    the brute-force counts, and 'modern' equals the running NumPy 2.x."""
    rng = np.random.default_rng(0)
    img = rng.integers(100, 1100, (300, 200))
    k = img.astype(np.int64)
    brute = np.bincount(np.minimum(50 * (k - k.min()) // (k.max() - k.min()), 49).ravel(), minlength=50)
    for arr in (img.astype(np.int32), img.astype(np.uint16), img.astype(np.int64)):
        for recipe in hist.RECIPES:
            np.testing.assert_array_equal(hist.histogram_counts(arr, recipe=recipe), brute)
    if int(np.__version__.split(".")[0]) >= 2:
        a = img.astype(np.uint16).astype(np.float32)
        a -= a.mean()
        a /= a.std()
        np.testing.assert_array_equal(np.histogram(a, 50)[0], brute)


# ------------------------------------------------------------------------------ the network


def test_weights_load_strictly(model):
    assert isinstance(model, nyu.NYUHistogramMLP) and not model.training
    assert sum(p.numel() for p in model.parameters()) == 20_504


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("recipe", hist.RECIPES)
def test_probabilities_match_fixture(model, details, expected, case, recipe):
    feats = np.concatenate([details[case, v, recipe].counts / (2600 * 2000) for v in hist.VIEWS]).astype(np.float32)
    with torch.no_grad():
        out = model(torch.from_numpy(feats)[None])
    probs = out["probabilities"][0].double().numpy()
    want = _case_expected(expected, case)
    dev = np.abs(probs - want["probabilities_list"][recipe]).max()
    print(f"\n{case} {recipe}: max |p - expected| = {dev:.2e}")
    assert dev < PROB_TOL
    np.testing.assert_allclose(out["logits"][0].double().numpy(), want["logits"][recipe], atol=1e-5)
    assert int(np.argmax(probs)) == want["argmax_class"][recipe] == 1


def test_predict_density_reproduces_the_readme(model, cases, expected):
    pred = nyu.predict_density(model, cases["baseline"])               # recipe='reference'
    readme = list(expected["readme_printed"]["histogram_first_commit_readme_290aaaa"].values())
    assert np.abs(pred.probabilities - readme).max() < 1e-6
    assert np.abs(pred.probabilities - expected["histogram"]["compare_with_readme"]["readme_values"]).max() < 1e-6
    assert pred.category == 1 and pred.variant == "histogram" and pred.features.shape == (200,)
    with torch.no_grad():
        hidden = torch.relu(model.fc1(torch.from_numpy(pred.features)[None]))[0].numpy()
    np.testing.assert_allclose(hidden, expected["histogram"]["fc1_relu_hidden_100_reference"], atol=1e-6)


def test_other_sizes_are_accepted_unless_official_size_is_required(model, cases):
    small = {v: img[::2, ::2] for v, img in cases["baseline"].items()}   # 1300 x 1000
    pred = nyu.predict_density(model, small, recipe="exact")
    assert pred.probabilities.sum() == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(InputError, match="2600 x 2000"):
        hist.exam_features(small, require_official_size=True)


# ------------------------------------------------------------------------------ errors


def test_exam_errors(cases):
    base = cases["baseline"]
    with pytest.raises(InputError, match=r"missing \['R-MLO'\]"):
        hist.exam_features({v: base[v] for v in hist.VIEWS[:3]})
    with pytest.raises(InputError, match=r"unknown \['LCC'\]"):
        hist.exam_features({**base, "LCC": base["L-CC"]})
    with pytest.raises(InputError, match="dict"):
        hist.exam_features([base[v] for v in hist.VIEWS])
    with pytest.raises(InputError, match="2-D"):
        hist.exam_features({**base, "L-CC": base["L-CC"][None]})
    with pytest.raises(InputError, match="dtype float32"):
        hist.exam_features({**base, "L-CC": base["L-CC"].astype(np.float32)})
    with pytest.raises(InputError, match="view R-CC is constant"):
        hist.exam_features({**base, "R-CC": np.full((20, 20), 7, np.uint8)})
    with pytest.raises(InputError, match="recipe"):
        hist.exam_features(base, recipe="numpy")
    with pytest.raises(InputError, match="bins"):
        hist.histogram_counts(base["L-CC"], bins=0)


def test_weight_file_errors(tmp_path):
    with pytest.raises(InputError, match="do not exist"):
        nyu.load_nyu_density(tmp_path / "missing.p")
    junk = tmp_path / "junk.p"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="could not be read"):
        nyu.load_nyu_density(junk)
    wrong = tmp_path / "wrong.p"
    torch.save({"conv.weight": torch.zeros(3)}, wrong)
    with pytest.raises(InputError, match="matching neither"):
        nyu.load_nyu_density(wrong)
    partial = tmp_path / "partial.p"
    sd = nyu.NYUHistogramMLP().state_dict()
    sd.pop("fc2.bias")
    torch.save(sd, partial)
    with pytest.raises(InputError, match=r"miss \['fc2.bias'\]"):
        nyu.load_nyu_density(partial)
    shapes = tmp_path / "shapes.p"
    sd = nyu.NYUHistogramMLP().state_dict()
    sd["fc1.weight"] = torch.zeros(100, 150)
    torch.save(sd, shapes)
    with pytest.raises(InputError, match="wrong shape"):
        nyu.load_nyu_density(shapes)
    with pytest.raises(InputError, match="variant"):
        nyu.load_nyu_density(partial, variant="vit")


def test_error_messages_are_one_line(tmp_path):
    wrong = tmp_path / "wrong.p"
    torch.save({"conv.weight": torch.zeros(3)}, wrong)
    for call in (lambda: nyu.load_nyu_density(tmp_path / "missing.p"), lambda: nyu.load_nyu_density(wrong)):
        with pytest.raises(InputError) as info:
            call()
        assert "\n" not in str(info.value)


# ------------------------------------------------------------------------------ the CNN variant


def test_cnn_architecture_and_strict_load(tmp_path, nyu_dir):
    cnn = nyu.build_nyu_density("cnn")
    sd = cnn.state_dict()
    assert len(sd) == 56 and sum(t.numel() for t in sd.values()) == 5_813_252   # fixture README
    assert "_conv_layer_ls.0.cc.weight" in sd and "_conv_layer_ls.12.mlo.bias" in sd
    path = tmp_path / "cnn.p"
    torch.save(sd, path)
    loaded = nyu.load_nyu_density(path)
    assert isinstance(loaded, nyu.NYUDensityCNN)
    with pytest.raises(InputError, match="cnn variant"):
        nyu.load_nyu_density(path, variant="histogram")
    with pytest.raises(InputError, match="histogram variant"):
        nyu.load_nyu_density(nyu_dir / "histogram_model.p", variant="cnn")


def test_cnn_forward_shape():
    torch.manual_seed(0)
    cnn = nyu.build_nyu_density("cnn").eval()
    rng = np.random.default_rng(0)
    images = {v: rng.integers(0, 256, nyu.CNN_MIN_SHAPE, dtype=np.uint8) for v in hist.VIEWS}
    pred = nyu.predict_density(cnn, images)
    assert pred.variant == "cnn" and pred.features is None
    assert pred.probabilities.shape == (4,) and pred.probabilities.sum() == pytest.approx(1.0, abs=1e-6)
    assert np.all(np.isfinite(pred.logits))
    with torch.device("meta"):      # shapes only: the official size and a batch of 2
        out = nyu.NYUDensityCNN()({v: torch.zeros(2, 1, *hist.OFFICIAL_SHAPE) for v in hist.VIEWS})
    assert out["logits"].shape == (2, 4) and out["probabilities"].shape == (2, 4)
    small = {v: img[:-1] for v, img in images.items()}
    with pytest.raises(InputError, match="at least 1159 x 1135"):
        nyu.predict_density(cnn, small)
