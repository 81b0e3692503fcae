"""core.stats against independent references: scikit-learn, brute-force O(mn) DeLong, a literal
Sun & Xu midrank implementation (scipy.stats.rankdata), hand-computed cases, and invariants."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import norm, rankdata
from sklearn.metrics import confusion_matrix, roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve

from core import stats as M
from core.stats.bootstrap import _resample_aucs
from core.errors import InputError
from core.store.schema import HISTOLOGIES
from core.vocabulary import HISTOLOGY_PRIORITY


# ---------------------------------------------------------------------------- references

def brute_delong(y, scores):
    """DeLong by definition, O(m n) per model: the kernel matrix, its row and column means."""
    scores = np.atleast_2d(scores)
    v10, v01 = [], []
    for s in scores:
        pos, neg = s[y == 1][:, None], s[y == 0][None, :]
        kernel = (pos > neg) + 0.5 * (pos == neg)
        v10.append(kernel.mean(axis=1))
        v01.append(kernel.mean(axis=0))
    v10, v01 = np.array(v10), np.array(v01)
    m, n = v10.shape[1], v01.shape[1]
    cov = np.atleast_2d(np.cov(v10, ddof=1)) / m + np.atleast_2d(np.cov(v01, ddof=1)) / n
    return v10.mean(axis=1), cov


def sun_xu(y, s):
    """Sun & Xu (2014) as written: three midrankings, V10 = (T_Z - T_X) / n, V01 = 1 - (T_Z - T_Y) / m."""
    pos, neg = s[y == 1], s[y == 0]
    m, n = pos.size, neg.size
    tz = rankdata(np.r_[pos, neg])
    v10 = (tz[:m] - rankdata(pos)) / n
    v01 = 1 - (tz[m:] - rankdata(neg)) / m
    return v10.mean(), v10.var(ddof=1) / m + v01.var(ddof=1) / n


@st.composite
def cases(draw, min_size=4, max_size=200):
    """Labels with both classes (2 of each from 4 cases on) and scores with many ties."""
    n = draw(st.integers(min_size, max_size))
    levels = draw(st.integers(1, 12))
    y = np.array(draw(st.lists(st.integers(0, 1), min_size=n, max_size=n)))
    y[:min(n, 4)] = [1, 0, 1, 0][:min(n, 4)]
    s = np.array(draw(st.lists(st.integers(0, levels), min_size=n, max_size=n)), dtype=float)
    return y, s / levels


def tie_heavy(rng, n, k=1, levels=7, prevalence=0.3):
    y = (rng.random(n) < prevalence).astype(int)
    y[:2] = [0, 1]
    s = rng.integers(0, levels, size=(k, n)) + 0.6 * y   # signal, and still many ties
    return y, (s if k > 1 else s[0]).astype(float)


# ---------------------------------------------------------------------------- AUC and ROC

@pytest.mark.parametrize("n", [2, 5, 37, 500, 5000])
def test_auc_matches_scikit_learn_with_ties(n):
    rng = np.random.default_rng(n)
    y, s = tie_heavy(rng, n)
    assert M.roc_auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert M.delong_auc(y, s).auc == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_hand_computed_toys():
    assert M.roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == 0.75
    assert M.roc_auc([0, 1], [0.5, 0.5]) == 0.5                   # one tie: one half
    assert M.roc_auc([0, 0, 1], [1, 2, 2]) == 0.75                 # 1 win + 1 tie over 2 pairs
    assert M.roc_auc([True, False], [0.0, 1.0]) == 0.0
    # DeLong by hand: V10 = (0.5, 1), V01 = (1, 0.5); S10 = S01 = 0.125; var = 0.125/2 + 0.125/2.
    r = M.delong_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    assert (r.auc, r.var, r.n_pos, r.n_neg, r.method) == (0.75, 0.125, 2, 2, "delong")
    assert r.ci_low == pytest.approx(0.75 - 1.959963984540054 * math.sqrt(0.125))
    assert r.ci_high == 1.0                                          # clipped


def test_docstring_examples():
    import doctest

    assert doctest.testmod(M, raise_on_error=True).attempted >= 1


def test_docstring_examples_of_every_stats_module():
    import doctest
    import importlib
    import pkgutil

    attempted = 0
    for info in pkgutil.iter_modules(M.__path__, "core.stats."):
        module = importlib.import_module(info.name)
        attempted += doctest.testmod(module, raise_on_error=True).attempted
    assert attempted >= 1   # roc_auc's (the package's own runs above)


def test_hanley_mcneil_rating_example():
    """Hanley & McNeil (1982, Radiology 143:29), Table 1: 58 normal and 51 abnormal CT images
    rated 1-5. By hand: sum over abnormal ratings of (normals below + half tied) = 2642 of
    51 * 58 = 2958 pairs; the paper reports AUC = 0.893."""
    normal, abnormal = [33, 6, 6, 11, 2], [3, 2, 2, 11, 33]
    s = np.r_[np.repeat(np.arange(1, 6), normal), np.repeat(np.arange(1, 6), abnormal)].astype(float)
    y = np.r_[np.zeros(58, int), np.ones(51, int)]
    assert M.roc_auc(y, s) == 2642 / 2958
    assert round(M.delong_auc(y, s).auc, 3) == 0.893


def test_roc_curve_matches_scikit_learn():
    rng = np.random.default_rng(1)
    y, s = tie_heavy(rng, 400, levels=30)
    for drop in (False, True):
        fpr, tpr, thr = M.roc_curve(y, s, drop_intermediate=drop)
        fpr2, tpr2, thr2 = sk_roc_curve(y, s, drop_intermediate=drop)
        np.testing.assert_allclose(fpr, fpr2, atol=1e-12)
        np.testing.assert_allclose(tpr, tpr2, atol=1e-12)
        np.testing.assert_array_equal(thr, thr2)
    assert np.trapezoid(tpr, fpr) == pytest.approx(M.roc_auc(y, s), abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(cases())
def test_roc_points_rethreshold_by_hand(case):
    y, s = case
    fpr, tpr, thr = M.roc_curve(y, s)
    assert (fpr[0], tpr[0], thr[0]) == (0.0, 0.0, np.inf)
    assert (fpr[-1], tpr[-1]) == (1.0, 1.0)
    assert np.all(np.diff(thr) < 0)
    for f, t, th in zip(fpr, tpr, thr):
        called = s >= th
        assert t == called[y == 1].mean() and f == called[y == 0].mean()


# ---------------------------------------------------------------------------- DeLong

@settings(max_examples=100, deadline=None)
@given(cases())
def test_delong_matches_brute_force_and_sun_xu(case):
    y, s = case
    r = M.delong_auc(y, s)
    auc, cov = brute_delong(y, s)
    assert r.auc == pytest.approx(auc[0], abs=1e-12)
    assert r.var == pytest.approx(cov[0, 0], abs=1e-12)
    auc_sx, var_sx = sun_xu(y, s)
    assert r.auc == pytest.approx(auc_sx, abs=1e-12) and r.var == pytest.approx(var_sx, abs=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_delong_covariance_matches_brute_force_k_models(seed):
    rng = np.random.default_rng(seed)
    y, s = tie_heavy(rng, 700, k=4, levels=5 + seed)
    s[1] = s[0] + rng.integers(0, 2, 700)                  # correlated models
    aucs, cov = M.delong_covariance(y, s)
    aucs_ref, cov_ref = brute_delong(y, s)
    np.testing.assert_allclose(aucs, aucs_ref, atol=1e-12)
    np.testing.assert_allclose(cov, cov_ref, atol=1e-12)
    for r in range(4):
        assert cov[r, r] == pytest.approx(M.delong_auc(y, s[r]).var, abs=1e-15)


@settings(max_examples=100, deadline=None)
@given(cases(), st.randoms(use_true_random=False))
def test_invariants(case, rnd):
    y, s = case
    r = M.delong_auc(y, s)
    perm = np.array(rnd.sample(range(y.size), y.size))
    assert M.delong_auc(y[perm], s[perm]).auc == r.auc                       # order
    assert M.delong_auc(y[perm], s[perm]).var == pytest.approx(r.var, abs=1e-15)
    for monotone in (rankdata(s), np.exp(3 * s), 10 * s - 4):                 # ranks only
        same = M.delong_auc(y, monotone)
        assert same.auc == pytest.approx(r.auc, abs=1e-12)
        assert same.var == pytest.approx(r.var, abs=1e-12)
    flipped = M.delong_auc(1 - y, s)                                          # 1 - y: 1 - AUC
    assert flipped.auc == pytest.approx(1 - r.auc, abs=1e-12)
    assert flipped.var == pytest.approx(r.var, abs=1e-12)
    assert M.delong_auc(y, -s).auc == pytest.approx(1 - r.auc, abs=1e-12)
    assert 0 <= r.ci_low <= r.auc <= r.ci_high <= 1
    assert M.roc_auc(y.astype(bool), s) == r.auc                              # bool labels


@settings(max_examples=50, deadline=None)
@given(cases(), st.integers(0, 2**32 - 1))
def test_paired_tests_agree_with_each_other(case, seed):
    y, a = case
    b = np.random.default_rng(seed).permutation(a) * 0.5 + a
    t = M.delong_paired_test(y, a, b)
    aucs, cov = brute_delong(y, np.vstack([a, b]))
    assert (t.auc_a, t.auc_b) == pytest.approx(tuple(aucs), abs=1e-12)
    var = cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
    assert t.se == pytest.approx(math.sqrt(max(var, 0)), abs=1e-9)
    back = M.delong_paired_test(y, b, a)                                      # antisymmetric
    assert back.diff == -t.diff and back.p == pytest.approx(t.p)
    c = M.delong_contrast_test(y, np.vstack([a, b]), [1, -1])
    assert c.estimate == pytest.approx(t.diff, abs=1e-15) and c.p == pytest.approx(t.p)
    if t.se > 0:
        assert t.p == pytest.approx(2 * norm.sf(abs(t.diff) / t.se), rel=1e-9)


def test_paired_test_of_a_model_against_itself():
    y, s = tie_heavy(np.random.default_rng(3), 200)
    t = M.delong_paired_test(y, s, s.copy())
    assert (t.diff, t.se, t.z, t.p) == (0.0, 0.0, 0.0, 1.0)


def test_contrast_against_brute_force():
    y, s = tie_heavy(np.random.default_rng(4), 300, k=3)
    c = np.array([1.0, -0.5, -0.5])
    aucs, cov = brute_delong(y, s)
    t = M.delong_contrast_test(y, s, c)
    assert t.estimate == pytest.approx(c @ aucs, abs=1e-12)
    assert t.se == pytest.approx(math.sqrt(c @ cov @ c), abs=1e-12)
    assert t.z == pytest.approx(t.estimate / t.se) and t.p == pytest.approx(2 * norm.sf(abs(t.z)))


def test_delong_matrix_rows_are_paired_tests_and_holm():
    y, s = tie_heavy(np.random.default_rng(5), 400, k=4)
    names = ["gmic", "resnet", "reader", "cad"]
    table = M.delong_matrix(y, s, names, holm=True)
    assert list(table.columns[:9]) == ["model_a", "model_b", "auc_a", "auc_b", "diff", "se", "z",
                                       "p", "p_holm"]
    assert len(table) == 6 and list(zip(table.model_a, table.model_b))[:3] == [
        ("gmic", "resnet"), ("gmic", "reader"), ("gmic", "cad")]
    for row in table.itertuples():
        t = M.delong_paired_test(y, s[names.index(row.model_a)], s[names.index(row.model_b)])
        assert (row.auc_a, row.auc_b, row.z, row.p) == pytest.approx((t.auc_a, t.auc_b, t.z, t.p))
    np.testing.assert_allclose(table.p_holm, M.holm_adjust(table.p))
    assert M.delong_matrix(y, s, names).p_holm.isna().all()


def test_one_positive_gives_an_auc_without_a_delong_interval():
    r = M.delong_auc([0, 0, 0, 1], [0.1, 0.2, 0.3, 0.25])
    assert r.auc == pytest.approx(2 / 3) and math.isnan(r.var) and math.isnan(r.ci_low)


def test_unpaired_test_by_hand():
    a = M.AUCResult(0.80, 0.0016, 0.72, 0.88, 40, 400, 0, "delong")
    b = M.AUCResult(0.70, 0.0009, 0.64, 0.76, 60, 400, 0, "delong")
    t = M.unpaired_auc_test(a, b)
    assert t.diff == pytest.approx(0.1) and t.se == pytest.approx(0.05)
    assert t.z == pytest.approx(2.0) and t.p == pytest.approx(2 * norm.sf(2.0))


@pytest.mark.parametrize("p, expected", [
    ([0.01, 0.04, 0.03, 0.005], [0.03, 0.06, 0.06, 0.02]),   # by hand: x4, x3, x2, x1, cummax
    ([0.01, np.nan, 0.04], [0.02, np.nan, 0.04]),             # NaN is not a test (as R)
    ([0.5, 0.6], [1.0, 1.0]),                                 # capped at 1
    ([], []),
])
def test_holm_by_hand(p, expected):
    np.testing.assert_allclose(M.holm_adjust(p), expected)


# ---------------------------------------------------------------------------- bootstrap

def test_resampled_aucs_equal_scikit_learn_on_the_same_draws():
    rng = np.random.default_rng(6)
    y, s = tie_heavy(rng, 300)
    pos, neg = s[y == 1], np.sort(s[y == 0])
    lo, hi = np.searchsorted(neg, pos, "left"), np.searchsorted(neg, pos, "right")
    pos_draw = rng.integers(0, pos.size, size=(25, pos.size))
    neg_draw = rng.integers(0, neg.size, size=(25, neg.size))
    got = _resample_aucs(lo, hi, neg.size, pos_draw, neg_draw)
    for b in range(25):
        ys = np.r_[np.ones(pos.size), np.zeros(neg.size)]
        want = roc_auc_score(ys, np.r_[pos[pos_draw[b]], neg[neg_draw[b]]])
        assert got[b] == pytest.approx(want, abs=1e-12)


def test_bootstrap_is_stratified_reproducible_and_close_to_delong():
    rng = np.random.default_rng(7)
    y = (rng.random(3000) < 0.2).astype(int)
    s = rng.normal(size=3000) + y
    boot = M.bootstrap_auc(y, s, n_boot=1000, seed=1)
    delong = M.delong_auc(y, s)
    assert boot == M.bootstrap_auc(y, s, n_boot=1000, seed=1)
    assert boot != M.bootstrap_auc(y, s, n_boot=1000, seed=2)
    assert (boot.auc, boot.n_pos, boot.n_neg, boot.method) == (delong.auc, delong.n_pos,
                                                               delong.n_neg, "bootstrap")
    assert 0.85 < boot.se / delong.se < 1.15                  # MC error of 1000 resamples ~ 2%
    assert boot.ci_low == pytest.approx(delong.ci_low, abs=0.01)
    assert boot.ci_high == pytest.approx(delong.ci_high, abs=0.01)
    calls = []
    M.bootstrap_auc(y, s, n_boot=50, progress=lambda d, t, msg: calls.append((d, t)))
    assert calls[-1] == (50, 50)


def test_bootstrap_resamples_keep_both_classes():
    """Two positives, one perfectly ranked: a stratified resample never lacks a class."""
    y, s = [1, 1, 0, 0, 0], [0.9, 0.1, 0.2, 0.3, 0.4]
    r = M.bootstrap_auc(y, s, n_boot=500, seed=0)
    assert 0 <= r.ci_low < r.ci_high <= 1 and r.ci_high == 1.0 and r.ci_low == 0.0


# ---------------------------------------------------------------------------- operating points

@settings(max_examples=80, deadline=None)
@given(cases(min_size=2), st.sampled_from([-np.inf, 0.0, 0.25, 0.5, 0.75, 1.0, 1.5, np.inf]))
def test_confusion_matches_scikit_learn(case, t):
    y, s = case
    c = M.confusion_at(y, s, t)
    tn, fp, fn, tp = confusion_matrix(y, s >= t, labels=[0, 1]).ravel()
    assert (c.tp, c.fp, c.tn, c.fn) == (tp, fp, tn, fn)
    assert c.sensitivity == tp / (tp + fn) and c.specificity == tn / (tn + fp)
    assert c.accuracy == (tp + tn) / len(y)
    assert (c.ppv == tp / (tp + fp)) if tp + fp else math.isnan(c.ppv)
    assert (c.npv == tn / (tn + fn)) if tn + fn else math.isnan(c.npv)
    assert c == M.confusion_at(y, s, t)        # NaN rates too: core.complement compares results


def test_confusion_toy_and_one_class():
    c = M.confusion_at([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], 0.4)
    assert (c.tp, c.fp, c.tn, c.fn) == (1, 1, 1, 1)
    assert (c.sensitivity, c.specificity, c.ppv, c.npv, c.accuracy) == (0.5, 0.5, 0.5, 0.5, 0.5)
    normals = M.confusion_at([0, 0, 0], [0.1, 0.5, 0.9], 0.5)
    assert normals.specificity == 1 / 3 and math.isnan(normals.sensitivity)


@settings(max_examples=80, deadline=None)
@given(cases(min_size=2), st.sampled_from([0.0, 0.1, 0.5, 0.7, 0.9, 0.98, 1.0]))
def test_thresholds_for_targets_by_brute_force(case, target):
    y, s = case
    candidates = np.r_[np.unique(s), np.inf]
    spec = np.array([(s[y == 0] < t).mean() for t in candidates])
    sens = np.array([(s[y == 1] >= t).mean() for t in candidates])
    t_spec = M.threshold_for_specificity(y, s, target)
    assert t_spec == candidates[spec >= target].min()
    assert M.confusion_at(y, s, t_spec).specificity >= target
    t_sens = M.threshold_for_sensitivity(y, s, target)
    assert t_sens == candidates[sens >= target].max()
    assert M.confusion_at(y, s, t_sens).sensitivity >= target


def test_threshold_toy():
    y, s = [0, 0, 0, 1], [0.1, 0.2, 0.3, 0.25]
    assert M.threshold_for_specificity(y, s, 2 / 3) == 0.25    # a positive's score, not 0.3
    assert M.threshold_for_specificity(y, s, 1.0) == np.inf     # no score above every normal
    assert M.threshold_for_specificity(y, [0.1, 0.2, 0.3, 0.35], 1.0) == 0.35
    assert M.threshold_for_specificity(y, [0.1, 0.2, 0.3, 0.3], 1.0) == np.inf
    assert M.threshold_for_sensitivity(y, s, 0.0) == np.inf
    assert M.threshold_for_sensitivity(y, s, 1.0) == 0.25


# ---------------------------------------------------------------------------- NaN and input types

def test_nan_scores_are_excluded_and_counted():
    y = np.array([0, 0, 1, 1, 1, 0])
    s = np.array([0.1, np.nan, 0.35, 0.8, np.nan, 0.4])
    r = M.delong_auc(y, s)
    clean = M.delong_auc(y[~np.isnan(s)], s[~np.isnan(s)])
    assert r.n_excluded == 2 and (r.auc, r.var, r.n_pos, r.n_neg) == (clean.auc, clean.var, 2, 2)
    assert M.bootstrap_auc(y, s, n_boot=20).n_excluded == 2
    assert M.confusion_at(y, s, 0.3).n_excluded == 2
    with pytest.warns(M.ExcludedScoresWarning, match="2 cases"):
        assert M.roc_auc(y, s) == clean.auc
    with pytest.warns(M.ExcludedScoresWarning):
        M.roc_curve(y, s)
    b = np.array([0.2, 0.3, np.nan, 0.9, 0.1, 0.5])                       # complete cases only
    t = M.delong_paired_test(y, s, b)
    keep = ~np.isnan(s) & ~np.isnan(b)
    assert t.n_excluded == 3 and t.auc_b == M.roc_auc(y[keep], b[keep])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        M.roc_auc(y[keep], s[keep])                                        # no NaN, no warning


def test_pandas_nullable_columns():
    labels = pd.Series([0, 1, 0, 1], dtype="Int8")
    scores = pd.Series([0.1, 0.7, None, 0.6], dtype="Float64")
    r = M.delong_auc(labels, scores)
    assert (r.auc, r.n_excluded) == (1.0, 1)
    with pytest.raises(InputError, match="1 missing labels"):
        M.roc_auc(pd.Series([0, 1, None, 1], dtype="Int8"), [0.1, 0.2, 0.3, 0.4])


# ---------------------------------------------------------------------------- errors

Y, S = [0, 1, 0, 1], [0.1, 0.7, 0.3, 0.6]


@pytest.mark.parametrize("call, match", [
    (lambda: M.roc_auc([0, 0, 0], [0.1, 0.2, 0.3]), r"one class only \(3 negatives, 0 positives\)"),
    (lambda: M.delong_auc([1, 1], [0.1, 0.2]), r"one class only \(0 negatives, 2 positives\)"),
    (lambda: M.roc_auc([0, 1, 1], [0.1, np.nan, np.nan]), "after excluding 2 NaN scores"),
    (lambda: M.roc_auc([], []), "no cases"),
    (lambda: M.roc_auc([0, 2, 1], [0.1, 0.2, 0.3]), r"0/1 or bool .* other values \[2\]"),
    (lambda: M.roc_auc(["ILC", "none"], [0.1, 0.2]), "0/1 or bool .* dtype"),
    (lambda: M.roc_auc([0, np.nan, 1], [0.1, 0.2, 0.3]), "1 missing labels"),
    (lambda: M.roc_auc([[0, 1], [1, 0]], [0.1, 0.2]), r"y_true must be 1-D.* shape \(2, 2\)"),
    (lambda: M.roc_auc([0, 1, 1], [0.1, 0.2]), r"3 cases but y_score has shape \(2,\)"),
    (lambda: M.roc_auc(Y, [0.1, np.inf, 0.3, 0.2]), "1 infinite values"),
    (lambda: M.roc_auc(Y, ["a", "b", "c", "d"]), "y_score must be numeric"),
    (lambda: M.delong_auc(Y, S, alpha=1.5), r"alpha must lie in \(0, 1\).*got 1.5"),
    (lambda: M.bootstrap_auc(Y, S, n_boot=1), r"n_boot must be an integer >= 2.*got 1"),
    (lambda: M.threshold_for_specificity(Y, S, 90), r"target must be a specificity in \[0, 1\]"),
    (lambda: M.threshold_for_sensitivity(Y, S, -0.1), "target must be a sensitivity"),
    (lambda: M.threshold_for_specificity([1, 1], [0.1, 0.2], 0.9), "needs negatives"),
    (lambda: M.threshold_for_sensitivity([0, 0], [0.1, 0.2], 0.9), "needs positives"),
    (lambda: M.confusion_at(Y, S, np.nan), "threshold must be a number"),
    (lambda: M.delong_covariance(Y, S), r"scores must have shape \(n_models, n_cases\)"),
    (lambda: M.delong_covariance(Y, np.zeros((4, 2))), r"transpose it\?"),
    (lambda: M.delong_covariance(Y, np.zeros((0, 4))), "no models"),
    (lambda: M.delong_paired_test(Y, S, S[:3]), "score_a has 4 cases but score_b has 3"),
    (lambda: M.delong_contrast_test(Y, [S, S], [1, -1, 0]), r"one weight per model, shape \(2,\)"),
    (lambda: M.delong_contrast_test(Y, [S, S], [0, 0]), "not all zero"),
    (lambda: M.delong_matrix(Y, [S, S], ["a", "a"]), "one unique name per model"),
    (lambda: M.unpaired_auc_test(0.8, 0.7), "a must be an AUCResult"),
    (lambda: M.holm_adjust([0.5, 1.2]), r"pvalues must lie in \[0, 1\]"),
])
def test_each_bad_input_has_its_own_error(call, match):
    with pytest.raises(InputError, match=match):
        call()


def test_input_error_is_a_value_error_and_says_what_to_do():
    with pytest.raises(ValueError, match="Check the label column or widen the exam filter"):
        M.delong_auc([0] * 412, np.linspace(0, 1, 412))


# ---------------------------------------------------------------------------- frames

def _image_frame():
    """Two models, two exams x two breasts x two views; hand-chosen scores and truth."""
    rows = []
    truth = {("e1", "L"): (1, "ILC"), ("e1", "R"): (0, "none"),
             ("e2", "L"): (1, "unknown"), ("e2", "R"): (0, "none")}
    scores = {("e1", "L"): (0.9, 0.5), ("e1", "R"): (0.2, np.nan),
              ("e2", "L"): (np.nan, np.nan), ("e2", "R"): (0.1, 0.3)}
    for model, shift in (("gmic", 0.0), ("cad", 0.05)):
        for (exam, lat), (label, hist) in truth.items():
            for view, sc in zip(("CC", "MLO"), scores[exam, lat]):
                image = f"{exam}/{lat}-{view}"
                rows.append(dict(model=model, case_id=image, exam_id=exam, laterality=lat,
                                 image_id=image, label=label, histology=hist, score=sc + shift,
                                 test_set="test-all", view=view))
    return pd.DataFrame(rows)


def test_aggregate_to_breast_and_exam_by_hand():
    frame = _image_frame()
    breast = M.aggregate_scores(frame, level="breast", how="max")
    assert list(breast.columns) == list(M.FRAME_COLUMNS) + ["test_set"]
    gmic = breast[breast.model == "gmic"].set_index("case_id")
    assert list(gmic.index) == ["e1/L", "e1/R", "e2/L", "e2/R"]
    assert gmic.score["e1/L"] == 0.9 and gmic.score["e1/R"] == 0.2       # NaN view ignored
    assert math.isnan(gmic.score["e2/L"])                                 # all NaN stays NaN
    assert gmic.image_id.isna().all() and list(gmic.histology) == ["ILC", "none", "unknown", "none"]
    mean = M.aggregate_scores(frame, level="breast", how="mean")
    assert mean.set_index(["model", "case_id"]).score["cad", "e1/L"] == pytest.approx(0.75)
    exam = M.aggregate_scores(frame, level="exam", how="mean").set_index(["model", "case_id"])
    assert exam.score["gmic", "e1"] == pytest.approx((0.9 + 0.5 + 0.2) / 3)
    assert exam.score["gmic", "e2"] == pytest.approx((0.1 + 0.3) / 2)
    assert exam.label["gmic", "e1"] == 1 and exam.histology["gmic", "e1"] == "ILC"
    assert exam.histology["gmic", "e2"] == "unknown" and exam.laterality.isna().all()
    assert M.aggregate_scores(frame, level="image").equals(frame)
    frame["label"] = frame["label"].astype("Int8")                 # as the store returns it
    frame.loc[frame.exam_id == "e2", "label"] = pd.NA              # truth not recorded
    exam = M.aggregate_scores(frame, level="exam").set_index(["model", "case_id"])
    assert exam.label["gmic", "e1"] == 1 and pd.isna(exam.label["gmic", "e2"])


@pytest.mark.parametrize("parts, exam", [
    (["none", "none"], "none"), (["none", "unknown"], "unknown"), (["other", "unknown"], "other"),
    (["IDC", "other"], "IDC"), (["IDC", "ILC"], "ILC"), (["ILC", "none"], "ILC"),
])
def test_exam_histology_rule(parts, exam):
    frame = pd.DataFrame(dict(model="m", case_id=["x/L", "x/R"], exam_id="x", laterality=["L", "R"],
                              image_id=None, label=[0, 0], histology=parts, score=[0.1, 0.2]))
    assert M.aggregate_scores(frame, level="exam").histology.tolist() == [exam]
    assert set(HISTOLOGY_PRIORITY) == set(HISTOLOGIES)


def test_aggregate_matches_a_plain_loop():
    rng = np.random.default_rng(8)
    n = 600
    frame = pd.DataFrame(dict(
        model=rng.choice(["a", "b"], n), exam_id=rng.choice([f"e{i}" for i in range(40)], n),
        laterality=rng.choice(["L", "R"], n), label=rng.integers(0, 2, n),
        histology=rng.choice(list(HISTOLOGIES), n),
        score=np.where(rng.random(n) < 0.2, np.nan, rng.random(n))))
    frame["image_id"] = [f"i{i}" for i in range(n)]
    frame["case_id"] = frame["image_id"]
    out = M.aggregate_scores(frame, level="breast", how="mean").set_index(["model", "case_id"])
    for (model, exam, lat), g in frame.groupby(["model", "exam_id", "laterality"]):
        got = out.loc[(model, f"{exam}/{lat}")]
        vals = [v for v in g.score if not math.isnan(v)]
        if vals:
            assert got.score == pytest.approx(sum(vals) / len(vals))
        else:
            assert math.isnan(got.score)
        assert got.label == max(g.label)
    assert len(out) == frame.groupby(["model", "exam_id", "laterality"]).ngroups


@pytest.mark.parametrize("kwargs, match", [
    (dict(level="patient"), "level must be one of"),
    (dict(level="exam", how="median"), "how must be 'max' or 'mean'"),
])
def test_aggregate_errors(kwargs, match):
    with pytest.raises(InputError, match=match):
        M.aggregate_scores(_image_frame(), **kwargs)


def test_aggregate_frame_errors():
    frame = _image_frame()
    with pytest.raises(InputError, match=r"lacks column\(s\) \['label'\]"):
        M.aggregate_scores(frame.drop(columns="label"), level="exam")
    with pytest.raises(InputError, match=r"histology has values outside .*\['lobular'\]"):
        M.aggregate_scores(frame.assign(histology="lobular"), level="exam")
    with pytest.raises(InputError, match="laterality must be 'L' or 'R'"):
        M.aggregate_scores(frame.assign(laterality="B"), level="breast")


def test_auc_table_matches_delong_per_group_with_notes():
    rng = np.random.default_rng(9)
    parts = []
    for test_set in ("test-all", "test-ILC"):
        y, s = tie_heavy(rng, 500, k=2)
        for name, row in zip(("gmic", "cad"), s):
            parts.append(pd.DataFrame(dict(test_set=test_set, model=name, label=y, score=row)))
    parts.append(pd.DataFrame(dict(test_set="normals", model="gmic", label=[0, 0, 0],
                                   score=[0.1, np.nan, 0.3])))
    frame = pd.concat(parts, ignore_index=True)
    frame.loc[5, "score"] = np.nan
    table = M.auc_table(frame)
    assert list(table.columns) == ["test_set", "model", "n_pos", "n_neg", "n_excluded", "auc",
                                   "ci_low", "ci_high", "note"]
    assert list(zip(table.test_set, table.model)) == [
        ("test-all", "gmic"), ("test-all", "cad"), ("test-ILC", "gmic"), ("test-ILC", "cad"),
        ("normals", "gmic")]
    for row in table.iloc[:4].itertuples():
        g = frame[(frame.test_set == row.test_set) & (frame.model == row.model)]
        r = M.delong_auc(g.label, g.score)
        assert (row.auc, row.ci_low, row.ci_high, row.n_pos, row.n_neg, row.n_excluded) == (
            r.auc, r.ci_low, r.ci_high, r.n_pos, r.n_neg, r.n_excluded)
        assert row.note == ""
    assert table.n_excluded.tolist() == [1, 0, 0, 0, 1]
    last = table.iloc[-1]
    assert last.note == "n/a: no positives" and math.isnan(last.auc) and last.n_neg == 2

    boot = M.auc_table(frame[frame.test_set == "test-ILC"], ci="bootstrap", n_boot=200, seed=3)
    g = frame[(frame.test_set == "test-ILC") & (frame.model == "cad")]
    r = M.bootstrap_auc(g.label, g.score, n_boot=200, seed=3)
    assert (boot.ci_low.iloc[1], boot.ci_high.iloc[1]) == (r.ci_low, r.ci_high)

    plain = M.auc_table(pd.DataFrame(dict(model="m", label=[1, 1], score=[0.1, 0.2])), ci="none")
    assert plain.test_set.isna().all() and plain.note.tolist() == ["n/a: no negatives"]
    no_ci = M.auc_table(frame, ci="none")
    assert no_ci.auc.equals(table.auc) and no_ci.ci_low.isna().all()


def test_auc_table_errors():
    frame = pd.DataFrame(dict(model="m", label=[0, 1], score=[0.1, 0.2]))
    with pytest.raises(InputError, match="ci must be 'delong', 'bootstrap' or 'none'; got 'wald'"):
        M.auc_table(frame, ci="wald")
    with pytest.raises(InputError, match=r"lacks column\(s\) \['score'\]"):
        M.auc_table(frame.drop(columns="score"))
    with pytest.raises(InputError, match="label must be 0/1"):
        M.auc_table(frame.assign(label=[0, 3]))
