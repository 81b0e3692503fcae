"""core.complement against a hand-worked example, brute force, published Wilson values and invariants."""
from __future__ import annotations

import math
from dataclasses import astuple

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st
from scipy.optimize import brentq
from scipy.stats import norm

from core import complement as cp
from core.errors import InputError
from core.stats import confusion_at, wilson_ci

# ---------------------------------------------------------------------------- the hand example
# 17 cases: 6 cancers (c1-c6), 10 healthy (h1-h10), and one cancer without a model score.
#        c1   c2   c3   c4   c5   c6   h1   h2   h3    h4   h5   h6    h7    h8    h9    h10  no score
Y = [1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]
R = [1, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0]
S = [.9, .3, .8, .6, .2, .7, .1, .2, .55, .3, .4, .65, .05, .45, .35, .15, np.nan]
# At threshold 0.5 the model flags c1 c3 c4 c6 and h3 h6.
#   reader: tp 3 (c1 c2 c6), fn 3, fp 1 (h6), tn 9          -> sens 3/6, spec 9/10
#   model:  tp 4, fn 2 (c2 c5), fp 2 (h3 h6), tn 8           -> sens 4/6, spec 8/10
#   reader-negatives: cancers c3 c4 c5, caught c3 c4 (2 of 3); healthy 9, flagged h3 (1)
#                     -> 1000 / 9 = 111.1 extra recalls per 1,000 healthy reader-negatives
#   reader-positives: cancers c1 c2 c6, model flags c1 c6; healthy h6, flagged
#   reader or model:  tp 3 + 2 = 5, fp 1 + 1 = 2              -> sens 5/6, spec 8/10
# Specificity >= 0.9 (= the reader's): at most one healthy score at or above t, so t is above
# h3's 0.55 and at most c4's 0.6; the model still flags c1 c3 c4 c6, and only h6 among healthy.


def test_hand_example_at_given_threshold():
    res = cp.complement(Y, S, R, threshold=0.5)
    assert (res.n_cases, res.n_excluded, res.cancers, res.healthy) == (16, 1, 6, 10)
    assert (res.reader.tp, res.reader.fn, res.reader.fp, res.reader.tn) == (3, 3, 1, 9)
    assert (res.model.tp, res.model.fn, res.model.fp, res.model.tn) == (4, 2, 2, 8)
    assert (res.combined.tp, res.combined.fn, res.combined.fp, res.combined.tn) == (5, 1, 2, 8)
    neg, pos = res.among_reader_negative, res.among_reader_positive
    assert (neg.n, neg.cancers, neg.caught, neg.missed, neg.healthy, neg.flagged_healthy) == (12, 3, 2, 1, 9, 1)
    assert (pos.n, pos.cancers, pos.caught, pos.healthy, pos.flagged_healthy) == (4, 3, 2, 1, 1)
    assert neg.sensitivity == pytest.approx(2 / 3) and neg.specificity == pytest.approx(8 / 9)
    assert (res.caught, res.reader_missed, res.extra_recalls) == (2, 3, 1)
    assert res.extra_recalls_per_1000 == pytest.approx(1000 / 9)
    assert res.sensitivity_gain.estimate == pytest.approx(2 / 6)
    assert res.specificity_change.estimate == pytest.approx(-1 / 10)
    assert math.isnan(res.target_specificity)


@pytest.mark.parametrize("kwargs", [dict(specificity=0.9), dict(match_reader=True)])
def test_hand_example_at_matched_specificity(kwargs):
    res = cp.complement(Y, S, R, **kwargs)
    assert res.target_specificity == pytest.approx(0.9)
    assert res.threshold == 0.6                      # an observed score: c4's
    assert (res.model.tp, res.model.fp, res.caught, res.extra_recalls) == (4, 1, 2, 0)
    assert (res.combined.tp, res.combined.fp) == (5, 1)


def test_hand_example_table():
    table = cp.complement_table(cp.complement(Y, S, R, threshold=0.5))
    expected = pd.DataFrame({
        "truth": ["cancer"] * 3 + ["healthy"] * 3,
        "reader": ["recall", "no recall", "total"] * 2,
        "model_recall": [2, 2, 4, 1, 1, 2],
        "model_no_recall": [1, 1, 2, 0, 8, 8],
        "total": [3, 3, 6, 1, 9, 10],
    })
    pd.testing.assert_frame_equal(table, expected, check_dtype=False)


def test_hand_example_rates_table():
    table = cp.rates_table(cp.complement(Y, S, R, threshold=0.5)).set_index("rule")
    assert table.loc["reader or model", "sensitivity"] == pytest.approx(5 / 6)
    assert table.loc["model among reader-negative", "specificity"] == pytest.approx(8 / 9)
    assert table.loc["model", "recalls_per_1000"] == pytest.approx(1000 * 6 / 16)
    low, high = wilson_ci(5, 6)
    assert table.loc["reader or model", ["sensitivity_ci_low", "sensitivity_ci_high"]].tolist() == \
        pytest.approx([low, high])


def test_hand_example_workflows():
    # Arbiter recalls c3 and h3 of the discordant c2 c3 c4 h3. Triage at 0.35 leaves c2 c5 and
    # h1 h2 h4 h7 h10 unread: 9 of 16 read, and the reader's c2 is lost.
    arbiter = [0, 0, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]
    table = cp.workflows(Y, S, R, threshold=0.5, triage_threshold=0.35, arbiter_recall=arbiter,
                         n_boot=200).set_index("workflow")
    expect = {  # sensitivity, specificity, recalls, reads, lost, gained
        "reader": (3 / 6, 9 / 10, 4, 1.0, 0, 0),
        "model alone": (4 / 6, 8 / 10, 6, 0.0, 1, 2),
        "reader or model": (5 / 6, 8 / 10, 7, 1.0, 0, 2),
        "reader and model": (2 / 6, 9 / 10, 3, 1.0, 1, 0),
        "arbitration": (3 / 6, 8 / 10, 5, 1 + 4 / 16, 1, 1),
        "triage": (2 / 6, 9 / 10, 3, 9 / 16, 1, 0),
    }
    assert list(table.index) == list(expect)
    for name, (se, sp, recalls, reads, lost, gained) in expect.items():
        row = table.loc[name]
        assert row.sensitivity == pytest.approx(se) and row.specificity == pytest.approx(sp)
        assert row.recalls == recalls and row.recalls_per_1000 == pytest.approx(1000 * recalls / 16)
        assert row.reads_per_case == pytest.approx(reads)
        assert (row.cancers_lost, row.cancers_gained) == (lost, gained)
        assert row.sensitivity_change == pytest.approx(se - 3 / 6)
        assert row.sensitivity_ci_low <= row.sensitivity <= row.sensitivity_ci_high
    assert table.loc["reader", "sensitivity_change_ci_low"] == table.loc["reader", "sensitivity_change_ci_high"] == 0
    double = cp.workflows(Y, S, R, threshold=0.5, reader_reads=2, n_boot=10).set_index("workflow")
    assert double.loc["reader", "reads_per_case"] == 2 and "triage" not in double.index


def test_hand_example_tradeoff():
    curve = cp.tradeoff_curve(Y, S, R)
    # Reader-negative scores, highest first: c3 .8, c4 .6, h3 .55, h8 .45, h5 .4, h9 .35, h4 .3,
    # c5 .2 and h2 .2, h10 .15, h1 .1, h7 .05.
    assert curve.threshold.tolist() == [.8, .6, .55, .45, .4, .35, .3, .2, .15, .1, .05]
    assert curve.caught.tolist() == [1, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3]
    assert curve.extra_recalls.tolist() == [0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    row = curve.set_index("threshold").loc[0.55]
    assert row.caught_fraction == pytest.approx(2 / 3)
    assert row.extra_recalls_per_1000 == pytest.approx(1000 / 9)
    assert row.specificity == pytest.approx(8 / 9) and row.model_specificity == pytest.approx(8 / 10)


def test_describe_hand_example():
    lines = cp.describe(cp.complement(Y, S, R, threshold=0.5))
    assert ("At this threshold the model would have flagged 2 of the 3 cancers the radiologists "
            "missed, at 111 extra recalls per 1,000 healthy women they did not recall.") in lines
    assert lines[-1] == "1 cases without a model score or a reader decision were left out."
    assert any("sensitivity 83.3% instead of 50.0%" in line for line in lines)
    assert all(isinstance(line, str) and line.endswith(".") for line in lines)
    matched = cp.describe(cp.complement(Y, S, R, match_reader=True), unit="exams")
    assert "match the radiologists' specificity of 90.0%" in matched[0]


def test_unreachable_specificity_gives_an_infinite_threshold_that_flags_nothing():
    # the top score is healthy, so only +inf reaches specificity 1
    y, s, r = [1, 0, 1, 0], [0.5, 0.9, 0.2, 0.1], [0, 0, 1, 0]
    res = cp.complement(y, s, r, specificity=1.0)
    assert res.threshold == np.inf and res.model.tp == res.model.fp == res.caught == 0
    assert cp.describe(res)[0].startswith("No model score reaches a specificity of 100.0%")
    table = cp.workflows(y, s, r, threshold=res.threshold, n_boot=10).set_index("workflow")
    assert table.loc["reader or model", "sensitivity"] == table.loc["reader", "sensitivity"] == 0.5


def test_reader_scores_with_a_threshold_match_binary_recalls():
    reader_score = np.where(np.array(R) == 1, 4.0, 2.0)       # e.g. BI-RADS 4 vs 2
    assert cp.reader_decisions(reader_score, threshold=3).tolist() == [bool(v) for v in R]
    assert cp.reader_decisions(np.array(R, dtype=bool)).tolist() == [bool(v) for v in R]
    a = cp.complement(Y, S, R, threshold=0.5)
    b = cp.complement(Y, S, reader_score, threshold=0.5, reader_threshold=3)
    assert (a.reader, a.combined, a.among_reader_negative) == (b.reader, b.combined, b.among_reader_negative)


def test_missing_reads_are_excluded_and_counted():
    r = pd.Series(R, dtype="boolean")
    r[0] = pd.NA                                   # c1 not read
    res = cp.complement(pd.Series(Y), pd.Series(S), r, threshold=0.5)
    assert (res.n_cases, res.n_excluded, res.cancers) == (15, 2, 5)


# ---------------------------------------------------------------------------- input errors

@pytest.mark.parametrize("args, kwargs, match", [
    ((Y[:-1], S, R), dict(threshold=0.5), "model_score has 17 values but y_true has 16"),
    (([2] + Y[1:], S, R), dict(threshold=0.5), "y_true must be 0/1"),
    ((Y, S, [0.7] + R[1:]), dict(threshold=0.5), "reader_threshold="),
    (([1] * 17, S, R), dict(threshold=0.5), "one class only"),
    ((Y, S, R), dict(threshold=0.5, specificity=0.9), "exactly one of"),
    ((Y, S, R), dict(), "exactly one of"),
    ((Y, S, R), dict(specificity=1.5), r"specificity must lie in \(0, 1\]"),
    ((Y, S, R), dict(threshold=np.nan), "threshold must be a number"),
    ((Y, S, R), dict(threshold="0.5"), "threshold must be a number"),
    ((Y, [np.inf] + S[1:], R), dict(threshold=0.5), "infinite"),
    ((Y, ["a"] * 17, R), dict(threshold=0.5), "model_score is not numeric"),
    (([], [], []), dict(threshold=0.5), "no cases"),
    ((np.ones((17, 2)), S, R), dict(threshold=0.5), "1-D"),
])
def test_bad_inputs_raise_one_line_input_errors(args, kwargs, match):
    with pytest.raises(InputError, match=match) as info:
        cp.complement(*args, **kwargs)
    assert "\n" not in str(info.value)


def test_other_input_errors():
    with pytest.raises(InputError, match="missing values"):
        cp.reader_decisions([1, np.nan, 0])
    with pytest.raises(InputError, match="arbiter must decide"):
        cp.workflows(Y, S, R, threshold=0.5, arbiter_recall=[np.nan] * 17, n_boot=10)
    with pytest.raises(InputError, match="metric"):
        cp.bootstrap_difference([0, 1], [0, 1], [1, 1], metric="auc")
    with pytest.raises(InputError, match="needs cancers"):
        cp.bootstrap_difference([0, 0], [0, 1], [1, 1])
    with pytest.raises(InputError, match="0 <= k <= n"):
        wilson_ci(5, 3)


# ---------------------------------------------------------------------------- Wilson

@pytest.mark.parametrize("k, n, low, high", [
    # Newcombe (1998), Stat Med 17:857, Table I, method 3 (score, no continuity correction)
    (81, 263, 0.2553, 0.3662),
    (15, 148, 0.0624, 0.1605),
    (0, 20, 0.0, 0.1611),
    (1, 29, 0.0061, 0.1718),
])
def test_wilson_matches_published_values(k, n, low, high):
    assert wilson_ci(k, n) == pytest.approx((low, high), abs=5e-5)


def _wilson_by_root_finding(k, n, alpha):
    """The score interval's definition: the p for which |k/n - p| / sqrt(p(1-p)/n) = z."""
    z, p_hat = norm.ppf(1 - alpha / 2), k / n
    f = lambda p: (p_hat - p) ** 2 - z * z * p * (1 - p) / n  # noqa: E731
    low = 0.0 if k == 0 else brentq(f, 1e-15, p_hat if k < n else 1 - 1e-15)
    high = 1.0 if k == n else brentq(f, p_hat if k > 0 else 1e-15, 1 - 1e-15)
    return low, high


@given(st.integers(1, 5000).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))),
       st.sampled_from([0.01, 0.05, 0.1, 0.32]))
def test_wilson_matches_its_definition(kn, alpha):
    k, n = kn
    assert wilson_ci(k, n, alpha) == pytest.approx(_wilson_by_root_finding(k, n, alpha), abs=1e-9)


def test_wilson_vectorised_and_empty():
    low, high = wilson_ci([0, 81, 0], [20, 263, 0])
    assert low[:2] == pytest.approx([0.0, 0.2553], abs=5e-5) and math.isnan(low[2]) and math.isnan(high[2])


# ---------------------------------------------------------------------------- bootstrap

def _naive_bootstrap(y, a, b, n_boot, seed):
    """Resample case indices within the cancers: the slow, obviously right way."""
    rng = np.random.default_rng(seed)
    pos = np.flatnonzero(y)
    idx = pos[rng.integers(0, len(pos), size=(n_boot, len(pos)))]
    return a[idx].mean(axis=1) - b[idx].mean(axis=1)


def test_bootstrap_matches_naive_resampling():
    rng = np.random.default_rng(1)
    y = rng.random(3000) < 0.1
    b = y & (rng.random(3000) < 0.7)
    a = b | (y & (rng.random(3000) < 0.3)) | (rng.random(3000) < 0.05)
    res = cp.bootstrap_difference(y, a, b, n_boot=20000, seed=3)
    naive = _naive_bootstrap(y, a, b, 20000, seed=4)
    assert res.estimate == pytest.approx(a[y].mean() - b[y].mean())
    assert res.ci_low == pytest.approx(np.quantile(naive, 0.025), abs=0.006)
    assert res.ci_high == pytest.approx(np.quantile(naive, 0.975), abs=0.006)
    assert res == cp.bootstrap_difference(y, a, b, n_boot=20000, seed=3)        # seeded
    spec = cp.bootstrap_difference(y, a, b, metric="specificity", n_boot=500)
    assert spec.estimate == pytest.approx((~a[~y]).mean() - (~b[~y]).mean())
    rate = cp.bootstrap_difference(y, a, b, metric="recall_rate", n_boot=500)
    assert rate.estimate == pytest.approx(a.mean() - b.mean())


# ---------------------------------------------------------------------------- properties

@st.composite
def cases(draw, min_size=2, max_size=60):
    n = draw(st.integers(min_size, max_size))
    y = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    y[0], y[1] = True, False
    scores = np.array(draw(st.lists(st.integers(0, 8), min_size=n, max_size=n)), dtype=float) / 8
    reader = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    return y, scores, reader


@settings(max_examples=60, deadline=None)
@given(cases(), st.sampled_from([0.0, 0.3, 0.5, 0.8, 1.0, 1.5]))
def test_invariants_at_a_threshold(case, t):
    y, s, r = case
    res = cp.complement(y, s, r, threshold=t, n_boot=50)
    np.testing.assert_equal(astuple(res.model), astuple(confusion_at(y.astype(int), s, t)))  # nan == nan
    assert res.reader.tp == (y & r).sum() and res.reader.fp == (~y & r).sum()
    assert res.combined.sensitivity >= res.reader.sensitivity
    assert res.combined.specificity <= res.reader.specificity
    assert res.caught <= res.reader_missed == res.reader.fn
    assert res.combined.tp == res.reader.tp + res.caught
    assert res.combined.fp == res.reader.fp + res.extra_recalls
    neg, pos = res.among_reader_negative, res.among_reader_positive
    assert neg.caught + pos.caught == res.model.tp and neg.flagged_healthy + pos.flagged_healthy == res.model.fp
    assert neg.n + pos.n == res.n_cases == len(y)
    assert res.sensitivity_gain.ci_low <= res.sensitivity_gain.estimate + 1e-12
    table = cp.complement_table(res)
    assert table.total.sum() == 2 * len(y)


@settings(max_examples=60, deadline=None)
@given(cases(), st.sampled_from([0.5, 0.8, 0.9, 0.98, 1.0]))
def test_specificity_matching_lands_at_or_above_target(case, target):
    y, s, r = case
    res = cp.complement(y, s, r, specificity=target, n_boot=20)
    assert res.model.specificity >= target
    matched = cp.complement(y, s, r, match_reader=True, n_boot=20)
    assert matched.model.specificity >= matched.reader.specificity


@settings(max_examples=60, deadline=None)
@given(cases(), st.one_of(st.none(), st.lists(st.integers(-2, 10).map(lambda v: v / 8), max_size=8)))
def test_tradeoff_curve_matches_brute_force(case, grid):
    y, s, r = case
    curve = cp.tradeoff_curve(y, s, r, thresholds=grid)
    expected_t = np.unique(s[~r] if grid is None else grid)[::-1]
    np.testing.assert_array_equal(curve.threshold, expected_t)
    for row in curve.itertuples():
        flagged = s >= row.threshold
        assert row.caught == (flagged & ~r & y).sum()
        assert row.extra_recalls == (flagged & ~r & ~y).sum()
        assert row.model_specificity == pytest.approx(confusion_at(y.astype(int), s, row.threshold).specificity)
        res = cp.complement(y, s, r, threshold=row.threshold, n_boot=1)
        assert (row.caught, row.extra_recalls) == (res.caught, res.extra_recalls)
        if not (~r & ~y).any():
            assert math.isnan(row.specificity)
        else:
            assert row.specificity == pytest.approx(res.among_reader_negative.specificity)


@settings(max_examples=40, deadline=None)
@given(cases(), st.sampled_from([0.25, 0.5, 0.75]), st.sampled_from([0.125, 0.375]))
def test_workflow_invariants(case, t, triage):
    y, s, r = case
    table = cp.workflows(y, s, r, threshold=t, triage_threshold=triage, n_boot=20).set_index("workflow")
    reader = table.loc["reader"]
    assert table.loc["reader or model", "sensitivity"] >= reader.sensitivity
    assert table.loc["reader and model", "specificity"] >= reader.specificity
    assert table.loc["triage", "reads_per_case"] <= reader.reads_per_case
    assert table.loc["triage", "cancers_lost"] == (y & r & (s < triage)).sum()
    assert (table.cancers_detected == reader.cancers_detected - table.cancers_lost + table.cancers_gained).all()
