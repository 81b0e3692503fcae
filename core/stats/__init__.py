"""Statistics on numpy arrays and long score frames: no store, no I/O.

Import the public names from here, as from ``sklearn.metrics``:

>>> from core import stats
>>> stats.delong_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]).auc
0.75

or ``from core.stats import delong_auc``. The modules:

* ``auc``: `roc_auc`, `roc_curve`, `AUCResult`;
* ``delong``: DeLong's variance, covariance and tests (paired, contrast, matrix, unpaired),
  Holm's adjustment;
* ``bootstrap``: `bootstrap_auc`;
* ``operating_points``: `confusion_at` and the threshold for a target specificity or
  sensitivity;
* ``proportions``: `wilson_ci`; ``kappa``: weighted kappa;
* ``paired``: McNemar and Wilcoxon signed-rank tests of two models on the same cases;
* ``aggregate``: image scores to breast or exam scores; ``tables``: `auc_table`;
* ``_arrays``: the checks at the door that hand clean arrays to the private helpers.

Conventions (one contract for every function here, as scikit-learn's ``_ranking.py`` states its
own):

* ``y_true`` is 0/1 or bool, **1 = cancer** (the positive class). ``y_score`` is any monotone
  scale on which a **higher score is more suspicious** (probability, logit, rank).
* A case is called positive **iff score >= threshold**.
* A positive and a negative with equal scores count **one half** (the Mann-Whitney form of the
  AUC). AUC, DeLong variance and covariance therefore equal pROC's with ``direction = "<"``
  (pROC picks the direction from the data by default; we never do): variance
  ``S10 / m + S01 / n`` with sample covariances (ddof = 1) of the placement values.
* A NaN score means "no score" (a failed image, a model not run on a case). It is **excluded and
  counted, never dropped silently**: results that have a ``n_excluded`` field carry the count,
  the others emit an :class:`ExcludedScoresWarning`. Functions over several models exclude a case
  whose score is NaN under any model (paired statistics need complete cases). ±inf scores are
  rejected: +inf is reserved for the ROC curve's (0, 0) point.
* Bad input raises :class:`core.errors.InputError` (a ``ValueError``), one condition per message:
  the input, the value received, what to do. A test set with one class only is such an error;
  :func:`auc_table` reports it per row as ``"n/a: no positives"`` instead.
"""
from core.stats._arrays import ExcludedScoresWarning
from core.stats.aggregate import FRAME_COLUMNS, aggregate_scores
from core.stats.auc import AUCResult, roc_auc, roc_curve
from core.stats.bootstrap import bootstrap_auc
from core.stats.delong import (ContrastTest, PairedTest, UnpairedTest, delong_auc,
                               delong_contrast_test, delong_covariance, delong_matrix,
                               delong_paired_test, holm_adjust, unpaired_auc_test)
from core.stats.kappa import KAPPA_WEIGHTS, weighted_kappa, weighted_kappas
from core.stats.operating_points import (Confusion, confusion_at, threshold_for_sensitivity,
                                         threshold_for_specificity)
from core.stats.paired import McNemarResult, WilcoxonResult, mcnemar_test, wilcoxon_test
from core.stats.proportions import wilson_ci
from core.stats.tables import auc_table

__all__ = [
    "FRAME_COLUMNS", "KAPPA_WEIGHTS", "AUCResult", "PairedTest", "ContrastTest", "UnpairedTest",
    "Confusion", "ExcludedScoresWarning",
    "roc_auc", "roc_curve", "delong_auc", "bootstrap_auc", "delong_covariance",
    "delong_paired_test", "delong_contrast_test", "delong_matrix", "unpaired_auc_test",
    "holm_adjust", "confusion_at", "threshold_for_specificity", "threshold_for_sensitivity",
    "McNemarResult", "WilcoxonResult", "mcnemar_test", "wilcoxon_test",
    "wilson_ci", "weighted_kappa", "weighted_kappas", "aggregate_scores", "auc_table",
]
