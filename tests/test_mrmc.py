"""MRMC analysis against independent references: the Van Dyke data's published results, a case
worked by hand, brute-force jackknife and DeLong, the OR = DBM identity, scipy's paired t test
and DeLong's paired test (the reductions), and simulations under the null and for the power."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps
from sklearn.metrics import roc_auc_score

from core import stats as M
from core.errors import InputError
from core.stats.mrmc_core import (_bootstrap_cov, _delong_study_cov, _jackknife_aucs,
                                  _study_placements)
from tests.test_metrics import brute_delong


def plain_auc(y, s):
    """O(m n) Mann-Whitney AUC, ties one half."""
    pos, neg = s[y == 1][:, None], s[y == 0][None, :]
    return ((pos > neg) + 0.5 * (pos == neg)).mean()


def roe_metz(rng, n_readers=5, n_pos=50, n_neg=50, n_modalities=2, effect=0.0, mu=1.5):
    """Roe & Metz (1997) style ratings (r, t, c): case, modality x case, reader x case and
    residual noise on every case; reader and modality x reader shifts of the positives' mean;
    ``effect`` shifts the last modality's positives. Rounded to 1 decimal for ties."""
    r, t, c = n_readers, n_modalities, n_pos + n_neg
    y = np.r_[np.ones(n_pos, bool), np.zeros(n_neg, bool)]
    shift = (mu + 0.2 * rng.normal(size=(r, 1)) + 0.2 * rng.normal(size=(r, t))
             + effect * (np.arange(t) == t - 1))
    x = (y * shift[:, :, None] + np.sqrt(0.3) * rng.normal(size=(1, 1, c))
         + np.sqrt(0.2) * rng.normal(size=(1, t, c)) + np.sqrt(0.2) * rng.normal(size=(r, 1, c))
         + np.sqrt(0.3) * rng.normal(size=(r, t, c)))
    return np.round(x, 1), y.astype(int)


# ------------------------------------------------------------------ Van Dyke et al. (1993)
# Cine MRI vs spin-echo MRI, 5 readers x 2 modalities x 114 cases (69 normal, then 45 abnormal),
# ratings 1-5, as distributed with RJafroc (inst/extdata/datasets/VD.lrc; data values only).
# Row = reader 1..5 x modality (0 then 1), 114 ratings each.
VAN_DYKE = """
122151111111411111111131311214111113121211233131133111111221111332111555545554555434245555555154454553555115554451
333222223213122222211111421312214323123122233111333113412421241442111535555554555544335555555355355554455535555551
232222222322522232222222422223222222222222222222222222222432232222222535555542555442225555555243354552425225555352
322222223222222122221222322222212212222231223222222222322322222222122535555552555344245455545252355532425525555552
222235112242422232221232411322112224121412112222223211211221151421212545555555555542355555555252255552555225555552
242222322211132222121121411512112122212221132111233113221232341242121525555555555354145555555253355543555534555551
111111311111111111112111211112111111111111111111331111111111111311111555555555555555155555555554544553555125555555
221111312111122111211111321212111122112111112121212211111212111323211545555554555455555555555455445555555535555555
351211112221211122113221111211211231221113332111211111111341231212113525255551545452235555554144322151515115553552
223122221222111222122212322321212222112121132122332122221222231233111525455555455343335555555251332532545533555553
"""


def van_dyke():
    rows = [np.array(list(line), dtype=float) for line in VAN_DYKE.split()]
    return np.array(rows).reshape(5, 2, 114), np.r_[np.zeros(69), np.ones(45)]


def test_van_dyke_published_values():
    """Published OR RRRC (jackknife, trapezoidal AUC) on the Van Dyke data: F = 4.456 with
    Hillis ddf 15.26, p = 0.0517, modality means 0.8970 and 0.9408 (Hillis 2007; Hillis et al.
    2005 show DBM gives the same F); reader AUCs equal scikit-learn's."""
    ratings, truth = van_dyke()
    res = M.mrmc_test(ratings, truth)
    for r, t in np.ndindex(5, 2):
        assert res.auc.iat[r, t] == pytest.approx(roc_auc_score(truth, ratings[r, t]), abs=1e-12)
    assert res.statistic == pytest.approx(4.456, abs=5e-4)
    assert res.df2 == pytest.approx(15.26, abs=5e-3)
    assert res.p == pytest.approx(0.0517, abs=5e-5)
    assert res.modality_auc["auc"].tolist() == pytest.approx([0.8970, 0.9408], abs=5e-5)
    assert res.diff == pytest.approx(0.0438, abs=5e-5)
    dbm = M.mrmc_test(ratings, truth, method="dbm")
    assert (dbm.statistic, dbm.df2, dbm.p) == pytest.approx((res.statistic, res.df2, res.p),
                                                           rel=1e-10)
    assert "rose from 0.897 to 0.941" in res.summary() and "p = 0.052" in res.summary()


# ------------------------------------------------------------------ a case worked by hand

# cases: n1, n2 (normal), p1, p2 (cancer); ratings[reader, modality]
HAND = np.array([[[1, 3, 2, 4], [1, 2, 3, 4]],
                 [[2, 1, 2, 3], [1, 3, 3, 4]]], dtype=float)
HAND_TRUTH = [0, 0, 1, 1]


def test_two_readers_two_modalities_by_hand():
    """AUCs (pairs p > n, ties 1/2, over 4 pairs): R1: 3/4, 1; R2: 3.5/4, 3.5/4.
    Means 0.8125, 0.9375, grand 0.875: MS(T) = 2 (2 x 0.0625^2) = 0.015625; the interaction
    residuals are +-0.0625, so MS(TR) = 4 x 0.0625^2 / 1 = 0.015625.
    Leave-one-out AUCs over (n1, n2, p1, p2): R1M1 (.5, 1, 1, .5), R1M2 (1, 1, 1, 1),
    R2M1 (1, .75, 1, .75), R2M2 (.75, 1, 1, .75); jackknife cov = 3/4 x sum of products of
    deviations: Var = mean(0.1875, 0, 0.046875, 0.046875) = 0.0703125; Cov1 = 0 (the products
    cancel); Cov2 = 0; Cov3 = mean(3/4 x 0.125, 0) = 0.046875.
    RRRC: den = MS(TR) + 2 max(Cov2 - Cov3, 0) = 0.015625, F = 1, ddf = 1, p = P(F(1,1) > 1)
    = 1/2; se(diff) = sqrt(2 den / 2) = 0.125. var_TR = MS(TR) - (Var - Cov1 - Cov2 + Cov3) =
    -0.1015625; var_R = (0 - var_TR - Var - Cov1 + Cov2 + Cov3) / 2 = 0.0390625.
    FRRC: chi2 = MS(T) / (Var - Cov1) = 2/9. RRFC: F = MS(T) / MS(TR) = 1 on (1, 1) df.
    Each modality (RRRC): MS(R) = 2 x 0.0625^2 = 0.0078125, Cov2 = 0: se = 0.0625, df = 1."""
    res = M.mrmc_test(HAND, HAND_TRUTH, modalities=["unaided", "aided"], readers=["A", "B"])
    assert res.auc.to_numpy().tolist() == [[0.75, 1.0], [0.875, 0.875]]
    assert res.mean_squares["ms_t"] == pytest.approx(0.015625)
    assert res.mean_squares["ms_tr"] == pytest.approx(0.015625)
    comps = res.components
    assert comps["var_error"] == pytest.approx(0.0703125)
    assert (comps["cov1"], comps["cov2"], comps["cov3"]) == pytest.approx((0, 0, 0.046875))
    assert comps["var_TR"] == pytest.approx(-0.1015625)
    assert comps["var_R"] == pytest.approx(0.0390625)
    assert (res.statistic, res.df1, res.df2, res.p) == pytest.approx((1, 1, 1, 0.5))
    row = res.differences.iloc[0]
    assert (row["diff"], row["se"]) == pytest.approx((0.125, 0.125))
    assert row["ci_high"] - row["diff"] == pytest.approx(sps.t.ppf(0.975, 1) * 0.125)
    assert res.modality_auc["se"].tolist() == pytest.approx([0.0625, 0.0625])
    assert res.modality_auc["df"].tolist() == pytest.approx([1, 1])
    frrc = M.mrmc_test(HAND, HAND_TRUTH, analysis="frrc")
    assert (frrc.statistic_name, frrc.statistic) == ("chi2", pytest.approx(2 / 9))
    assert frrc.p == pytest.approx(sps.chi2.sf(2 / 9, 1))
    rrfc = M.mrmc_test(HAND, HAND_TRUTH, analysis="rrfc")
    assert (rrfc.statistic, rrfc.df2, rrfc.p) == pytest.approx((1, 1, 0.5))
    dbm = M.mrmc_test(HAND, HAND_TRUTH, method="dbm")
    assert (dbm.statistic, dbm.df2) == pytest.approx((1, 1))
    assert res.summary().startswith("With aided instead of unaided, readers' mean AUC rose "
                                    "from 0.812 to 0.938 (difference 0.125, 95 % CI")
    tables = res.tables()
    assert set(tables) == {"reader_auc", "modalities", "differences", "components", "test"}
    assert len(tables["reader_auc"]) == 4 and tables["test"]["p"].iat[0] == pytest.approx(0.5)


# ------------------------------------------------------------------ identities and brute force


@pytest.mark.parametrize("seed", range(6))
def test_or_jackknife_equals_dbm(seed):
    """OR with jackknife covariance and DBM give the same F, ddf, p and per-modality CIs for RRRC
    (Hillis et al. 2005), on random data with ties, 2 or 3 modalities; and DBM's components map
    onto OR's: var_TR equal, Var - Cov1 - Cov2 + Cov3 = var_error / c, Cov2 - Cov3 = var_TC / c."""
    rng = np.random.default_rng(seed)
    ratings, y = roe_metz(rng, n_readers=3 + seed % 3, n_pos=15 + seed, n_neg=20,
                          n_modalities=2 + seed % 2, effect=0.3)
    c = y.size
    o = M.mrmc_test(ratings, y)
    d = M.mrmc_test(ratings, y, method="dbm")
    assert abs(o.statistic - d.statistic) <= 1e-8 * o.statistic
    assert o.df2 == pytest.approx(d.df2, rel=1e-8) and o.p == pytest.approx(d.p, rel=1e-8)
    assert np.allclose(o.modality_auc.to_numpy(), d.modality_auc.to_numpy(), rtol=1e-8)
    oc, dc = o.components, d.components
    assert oc["var_TR"] == pytest.approx(dc["var_TR"], rel=1e-8, abs=1e-14)
    assert oc["var_error"] - oc["cov1"] - oc["cov2"] + oc["cov3"] == pytest.approx(
        dc["var_error"] / c, rel=1e-8)
    assert oc["cov2"] - oc["cov3"] == pytest.approx(dc["var_TC"] / c, rel=1e-8, abs=1e-14)


@pytest.mark.parametrize("seed", range(4))
def test_fast_jackknife_equals_brute_force(seed):
    """Every leave-one-out AUC from placements equals the plain O(m n) AUC recomputed without
    that case (ties in the ratings)."""
    rng = np.random.default_rng(seed)
    ratings, y = roe_metz(rng, n_readers=3, n_pos=12 + seed, n_neg=17)
    flat = ratings.reshape(6, -1)
    yb = y.astype(bool)
    aucs, v10, v01 = _study_placements(yb, flat)
    loo = _jackknife_aucs(yb, aucs, v10, v01)
    keep = np.ones(y.size, bool)
    for k in range(y.size):
        keep[k] = False
        brute = [plain_auc(y[keep], s[keep]) for s in flat]
        keep[k] = True
        assert np.abs(loo[:, k] - brute).max() <= 1e-12


def test_delong_covariance_equals_definition():
    """Complete reads: the study covariance equals DeLong by definition (the O(m n) kernel) and
    core.stats.delong_covariance; OR's Var is the mean of its diagonal."""
    ratings, y = roe_metz(np.random.default_rng(3), n_readers=4, n_pos=30, n_neg=40)
    flat = ratings.reshape(8, -1)
    _, v10, v01 = _study_placements(y.astype(bool), flat)
    cov = _delong_study_cov(v10, v01)
    assert np.abs(cov - brute_delong(y, flat)[1]).max() <= 1e-15
    assert np.abs(cov - M.delong_covariance(y, flat)[1]).max() <= 1e-15
    res = M.mrmc_test(ratings, y, cov="delong")
    assert res.components["var_error"] == pytest.approx(np.trace(cov) / 8, rel=1e-12)


def brute_shared_cov(y, flat):
    """DeLong covariance of AUCs on different case sets, by definition: each AUC's placements on
    the cases its reader read (O(m n) kernel), then for each pair m_ab / (m_a m_b) times the
    sample covariance over the positives both read, plus the same for negatives."""
    k = flat.shape[0]
    place = []
    for s in flat:
        read = ~np.isnan(s)
        pos, neg = s[read & (y == 1)], s[read & (y == 0)]
        kern = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
        p10, p01 = {}, {}
        for i, idx in enumerate(np.flatnonzero(read & (y == 1))):
            p10[idx] = kern[i].mean()
        for j, idx in enumerate(np.flatnonzero(read & (y == 0))):
            p01[idx] = kern[:, j].mean()
        place.append((p10, p01))
    cov = np.zeros((k, k))
    for a in range(k):
        for b in range(k):
            for part in (0, 1):
                pa, pb = place[a][part], place[b][part]
                shared = sorted(set(pa) & set(pb))
                if len(shared) >= 2:
                    xa, xb = [pa[i] for i in shared], [pb[i] for i in shared]
                    cov[a, b] += len(shared) / (len(pa) * len(pb)) * np.cov(xa, xb)[0, 1]
    return cov


def test_delong_with_missing_reads_and_split_plot():
    """Missing reads: the vectorised covariance equals the definition on shared cases. Split
    plot (readers 1-2 read one half of the cases, readers 3-4 the other): pairs across halves
    have covariance 0, and within a half equal delong_covariance on that half."""
    rng = np.random.default_rng(7)
    ratings, y = roe_metz(rng, n_readers=4, n_pos=30, n_neg=30)
    ratings[rng.random(ratings.shape) < 0.15] = np.nan
    flat = ratings.reshape(8, -1)
    _, v10, v01 = _study_placements(y.astype(bool), flat)
    assert np.abs(_delong_study_cov(v10, v01) - brute_shared_cov(y, flat)).max() <= 1e-15
    ratings, y = roe_metz(rng, n_readers=4, n_pos=40, n_neg=40)
    half = np.arange(y.size) % 2 == 0
    ratings[:2, :, ~half] = np.nan
    ratings[2:, :, half] = np.nan
    flat = ratings.reshape(8, -1)
    _, v10, v01 = _study_placements(y.astype(bool), flat)
    cov = _delong_study_cov(v10, v01)
    assert np.all(cov[:4, 4:] == 0)
    assert np.abs(cov[:4, :4] - M.delong_covariance(y[half], flat[:4, half])[1]).max() <= 1e-15
    res = M.mrmc_test(ratings, y, cov="delong")
    assert np.isfinite(res.p) and res.auc.shape == (4, 2)


def test_bootstrap_covariance_equals_resampling_by_hand():
    """The paired stratified bootstrap: the same draws, scored by scikit-learn one resample at a
    time, give the same covariance."""
    ratings, y = roe_metz(np.random.default_rng(5), n_readers=2, n_pos=10, n_neg=14)
    flat = ratings.reshape(4, -1)
    yb = y.astype(bool)
    got = _bootstrap_cov(yb, flat, 40, 11)
    rng = np.random.default_rng(11)
    neg_draw = rng.integers(0, 14, size=(40, 14))
    pos_draw = rng.integers(0, 10, size=(40, 10))
    boot = np.array([[roc_auc_score(np.r_[np.ones(10), np.zeros(14)],
                                    np.r_[s[yb][pos_draw[b]], s[~yb][neg_draw[b]]])
                      for s in flat] for b in range(40)])
    assert np.abs(got - np.cov(boot, rowvar=False)).max() <= 1e-15
    res = M.mrmc_test(ratings, y, cov="bootstrap", n_boot=200, seed=3)
    assert res.p == M.mrmc_test(ratings, y, cov="bootstrap", n_boot=200, seed=3).p


# ------------------------------------------------------------------ reductions


def test_frrc_with_one_reader_and_delong_is_delongs_paired_test():
    """One reader, fixed: OR's chi-square (Var - Cov1 by DeLong) is DeLong's paired z squared."""
    ratings, y = roe_metz(np.random.default_rng(2), n_readers=1, effect=0.4)
    res = M.mrmc_test(ratings, y, analysis="frrc", cov="delong")
    paired = M.delong_paired_test(y, ratings[0, 1], ratings[0, 0])
    assert (res.statistic_name, res.df1, res.df2) == ("chi2", 1, math.inf)
    assert res.statistic == pytest.approx(paired.z ** 2, rel=1e-10)
    assert res.p == pytest.approx(paired.p, rel=1e-10)
    assert res.differences["se"].iat[0] == pytest.approx(paired.se, rel=1e-10)


def test_rrfc_is_a_paired_t_test_of_reader_aucs():
    """Fixed cases: F = MS(T) / MS(TR) on (1, r - 1) df is the paired t test of the readers'
    AUCs, squared; three modalities give (2, 2 (r - 1)) df and FRRC's chi-square 2 df."""
    ratings, y = roe_metz(np.random.default_rng(4), n_readers=6, effect=0.3)
    res = M.mrmc_test(ratings, y, analysis="rrfc")
    auc = M.auc_matrix(ratings, y)
    ttest = sps.ttest_rel(auc[:, 1], auc[:, 0])
    assert (res.df1, res.df2) == (1, 5)
    assert res.statistic == pytest.approx(ttest.statistic ** 2, rel=1e-10)
    assert res.p == pytest.approx(ttest.pvalue, rel=1e-10)
    three, y3 = roe_metz(np.random.default_rng(4), n_readers=6, n_modalities=3)
    assert (M.mrmc_test(three, y3, analysis="rrfc").df2, M.mrmc_test(three, y3).df1) == (10, 2)
    frrc = M.mrmc_test(three, y3, analysis="frrc")
    assert (frrc.statistic_name, frrc.df1) == ("chi2", 2)
    assert len(frrc.differences) == 3 and "across 3 modalities" in frrc.summary()


def test_model_vs_readers_equals_or_with_the_model_as_a_modality():
    """The model against the readers equals OR RRRC on a two-modality design whose second
    modality is the model's scores for every reader (then Cov2 - Cov3 and MS(TR) are half those
    of the per-reader differences): same difference, ddf and p, F = t^2."""
    ratings, y = roe_metz(np.random.default_rng(8), n_readers=5)
    model = ratings[:, 1].mean(axis=0) + 0.05
    for cov in ("jackknife", "delong"):
        mv = M.model_vs_readers(ratings[:, 0], model, y, cov=cov)
        dup = np.stack([ratings[:, 0], np.broadcast_to(model, ratings[:, 0].shape)], axis=1)
        ref = M.mrmc_test(dup, y, cov=cov)
        assert mv.diff == pytest.approx(ref.diff, rel=1e-12)
        assert mv.t ** 2 == pytest.approx(ref.statistic, rel=1e-9)
        assert (mv.df, mv.p) == pytest.approx((ref.df2, ref.p), rel=1e-9)
        assert (mv.ci_low, mv.ci_high) == pytest.approx(ref.diff_ci, rel=1e-9)
    assert mv.model_auc == pytest.approx(roc_auc_score(y, model))
    assert mv.summary().startswith("model's AUC") and set(mv.tables()) == {
        "reader_auc", "test", "components"}


def test_auc_matrix_and_subgroups():
    ratings, y = roe_metz(np.random.default_rng(9), n_readers=3)
    mask = np.arange(y.size) % 3 != 0
    sub = M.auc_matrix(ratings, y, case_mask=mask)
    for r, t in np.ndindex(3, 2):
        assert sub[r, t] == pytest.approx(roc_auc_score(y[mask], ratings[r, t, mask]))
    ratings[0, 0, :5] = np.nan                                  # a reader's own cases
    keep = ~np.isnan(ratings[0, 0])
    assert M.auc_matrix(ratings, y)[0, 0] == pytest.approx(roc_auc_score(y[keep],
                                                                         ratings[0, 0, keep]))


# ------------------------------------------------------------------ the null and the power


def test_rrrc_rejects_at_the_nominal_rate_under_the_null():
    """500 Roe-Metz studies (5 readers, 50 + 50 cases) with no modality effect: the rejection
    rate at 5 % lies in the binomial 99 % interval around 5 % (it fails for a test that ignores
    reader variance: FRRC on the same data rejects far more often)."""
    rng = np.random.default_rng(2026)
    n_rep, p_rrrc, p_frrc = 500, [], []
    for _ in range(n_rep):
        ratings, y = roe_metz(rng)
        p_rrrc.append(M.mrmc_test(ratings, y).p)
        p_frrc.append(M.mrmc_test(ratings, y, analysis="frrc").p)
    lo, hi = sps.binom.ppf([0.005, 0.995], n_rep, 0.05) / n_rep
    rate = np.mean(np.array(p_rrrc) < 0.05)
    assert lo <= rate <= hi, (rate, lo, hi)
    assert np.mean(np.array(p_frrc) < 0.05) > hi


def test_power_formula_against_simulation_of_the_or_model():
    """Simulate the OR model on the AUC scale (reader, treatment x reader and correlated errors
    with Var, Cov1, Cov2, Cov3 for c cases), test each study with the known covariances and
    Hillis's df from its own MS(TR): the rejection rate matches mrmc_power within 0.02."""
    comps = {"var_TR": 0.0002, "var_error": 0.0008, "cov1": 0.00035, "cov2": 0.00034,
             "cov3": 0.00024}
    c_pilot, c, r, d, n_sim = 114, 150, 6, 0.04, 20000
    scale = c_pilot / c
    idx = np.arange(2 * r)
    same_r, same_t = (idx[:, None] % r) == (idx[None] % r), (idx[:, None] // r) == (idx[None] // r)
    sigma = scale * np.select([same_r & same_t, same_r, same_t],
                              [comps["var_error"], comps["cov1"], comps["cov2"]], comps["cov3"])
    rng = np.random.default_rng(1)
    err = rng.multivariate_normal(np.zeros(2 * r), sigma, size=n_sim).reshape(n_sim, 2, r)
    theta = (np.array([0, d])[None, :, None] + rng.normal(0, 0.03, (n_sim, 1, r))
             + rng.normal(0, math.sqrt(comps["var_TR"]), (n_sim, 2, r)) + err)
    mean_t = theta.mean(axis=2)
    ms_t = r * ((mean_t - mean_t.mean(1, keepdims=True)) ** 2).sum(1)
    resid = theta - mean_t[:, :, None] - theta.mean(1, keepdims=True) + mean_t.mean(
        1)[:, None, None]
    ms_tr = (resid ** 2).sum((1, 2)) / (r - 1)
    den = ms_tr + r * scale * (comps["cov2"] - comps["cov3"])
    ddf = den ** 2 / (ms_tr ** 2 / (r - 1))
    rate = np.mean(ms_t / den > sps.f.ppf(0.95, 1, ddf))
    want = M.sample_size(comps, effect=d, n_readers=[r], n_cases=[c], n_cases_pilot=c_pilot)
    assert 0.3 < rate < 0.95
    assert want["power"].iat[0] == pytest.approx(rate, abs=0.02)


def test_sample_size_table():
    """Monotone in readers and cases; the searched n_cases is the fewest that reach the power;
    a DBM pilot gives the OR pilot's table; FRRC's power is the normal formula
    Phi(sqrt(lambda) - z) + Phi(-sqrt(lambda) - z)."""
    ratings, truth = van_dyke()
    pilot = M.mrmc_test(ratings, truth)
    grid = M.sample_size(pilot, effect=0.05, n_readers=[4, 6, 10], n_cases=[50, 100, 200, 400])
    power = grid["power"].to_numpy().reshape(3, 4)
    assert (np.diff(power, axis=0) > 0).all() and (np.diff(power, axis=1) > 0).all()
    table = M.sample_size(pilot, effect=0.05, n_readers=[4, 6, 10], power=0.8)
    for r, c, pw in table.itertuples(index=False):
        assert pw >= 0.8
        below = M.sample_size(pilot, effect=0.05, n_readers=[r], n_cases=[c - 1])
        assert below["power"].iat[0] < 0.8
    assert table["n_cases"].is_monotonic_decreasing
    dbm = M.sample_size(M.mrmc_test(ratings, truth, method="dbm"), effect=0.05,
                        n_readers=[4, 6, 10])
    assert dbm["n_cases"].equals(table["n_cases"])
    assert dbm["power"].to_numpy() == pytest.approx(table["power"].to_numpy(), rel=1e-9)
    frrc = M.sample_size(pilot, effect=0.05, n_readers=[5], n_cases=[120], analysis="frrc")
    comps = pilot.components
    den = (114 / 120) * (comps["var_error"] - comps["cov1"] + 4 * (comps["cov2"]
                                                                   - comps["cov3"]))
    shift, z = math.sqrt(5 * 0.05 ** 2 / (2 * den)), sps.norm.ppf(0.975)
    assert frrc["power"].iat[0] == pytest.approx(sps.norm.cdf(shift - z)
                                                 + sps.norm.cdf(-shift - z), rel=1e-9)
    capped = M.sample_size(pilot, effect=0.05, n_readers=[2], analysis="rrfc", max_cases=1000)
    assert capped["n_cases"].isna().all()


# ------------------------------------------------------------------ bad input


GOOD, TRUTH = HAND, HAND_TRUTH


def one_read_missing():
    ratings = GOOD.copy()
    ratings[1, 0, 2] = np.nan
    return ratings


@pytest.mark.parametrize("call, match", [
    (lambda: M.mrmc_test(GOOD[:, :1], TRUTH), "1 modality"),
    (lambda: M.mrmc_test(GOOD[:1], TRUTH), "1 reader"),
    (lambda: M.mrmc_test(GOOD, [0, 0, 1, np.nan]), "missing labels"),
    (lambda: M.mrmc_test(GOOD.astype(str), TRUTH), "must be numeric"),
    (lambda: M.mrmc_test(GOOD, [0, 0, 1]), "ratings has 4 cases .* truth has 3"),
    (lambda: M.mrmc_test(GOOD[0], TRUTH), r"shape \(n_readers, n_modalities, n_cases\)"),
    (lambda: M.mrmc_test(one_read_missing(), TRUTH), "1 missing reads .* cov='delong'"),
    (lambda: M.mrmc_test(one_read_missing(), TRUTH, method="dbm"), "DBM needs every reader"),
    (lambda: M.mrmc_test(GOOD, TRUTH, method="dbm", cov="delong"), "does not apply"),
    (lambda: M.mrmc_test(GOOD, TRUTH, method="anova"), "method 'anova' is not one of or, dbm"),
    (lambda: M.mrmc_test(GOOD, TRUTH, analysis="rr"), "analysis 'rr' is not one of"),
    (lambda: M.mrmc_test(GOOD, TRUTH, alpha=5), "alpha must lie in"),
    (lambda: M.mrmc_test(GOOD, TRUTH, cov="bootstrap", n_boot=1), "n_boot must be"),
    (lambda: M.mrmc_test(GOOD, [0, 0, 0, 0]), "one class only"),
    (lambda: M.mrmc_test(np.where(np.arange(2)[None, :, None] == 1, np.nan, GOOD), TRUTH),
     r"ratings\[0, 1, :\] is all NaN"),
    (lambda: M.mrmc_test(GOOD, TRUTH, modalities=["a", "a"]), "2 unique names"),
    (lambda: M.model_vs_readers(GOOD[:1, 0], GOOD[0, 0], TRUTH), "at least 2"),
    (lambda: M.model_vs_readers(GOOD[:, 0], GOOD[0, 0, :3], TRUTH), "model_scores has 3"),
    (lambda: M.auc_matrix(GOOD, TRUTH, case_mask=[1, 0, 1, 1]), "case_mask must be bool"),
    (lambda: M.sample_size({"var_TR": 0.1}, effect=0.05, n_cases_pilot=50), "lacks"),
    (lambda: M.sample_size(M.mrmc_test(GOOD, TRUTH), effect=0), "effect must be"),
    (lambda: M.sample_size(M.mrmc_test(GOOD, TRUTH), effect=0.05, power=1), "power must"),
])
def test_each_bad_input_has_its_own_error(call, match):
    with pytest.raises(InputError, match=match):
        call()


def test_an_error_changes_nothing_and_names_the_remedy():
    ratings = one_read_missing()
    with pytest.raises(InputError) as err:
        M.mrmc_test(ratings, TRUTH)
    assert "\n" not in str(err.value) and "ratings[1, 0, 2]" in str(err.value)
    assert np.isnan(ratings[1, 0, 2]) and np.array_equal(ratings[0], GOOD[0])
