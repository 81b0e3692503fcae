"""The study's GMIC training loss (thesis eq. 5.12, GMIC paper): three BCEs plus an L1 on saliency.

    L = sum_{c in (benign, malignant)} BCE(y_c, y_global_c) + BCE(y_c, y_local_c)
                                       + BCE(y_c, y_fusion_c) + beta * |A_c|_1

averaged over the images of a batch. Every term is computed in float32 from the network's
*logits*, never from its sigmoid outputs: under bf16 autocast a probability rounds to exactly 0 or
1 long before its logit is large, and ``log(0)`` is the NaN that kills a run.

- ``y_local`` and ``y_fusion`` are sigmoids of ``local_logits`` / ``fusion_logits``: BCE with logits.
- ``y_global`` is the mean of the top-t *sigmoid* saliency cells, so it has no single logit. With
  ``s = sigmoid(l)`` over the top-t logits ``l`` (the top t by logit are the top t by saliency),
  ``log y_global = logsumexp(logsigmoid(l)) - log t`` and
  ``log(1 - y_global) = logsumexp(logsigmoid(-l)) - log t``: exact, finite for any logit, no
  clamping needed. It runs in float32 with autocast disabled.
- ``|A_c|_1``: the saliency maps are sigmoids (non-negative), so their L1 norm is their sum. The
  study sums over the cells; we take the *mean* over the cells so that ``beta`` does not depend on
  the input size (``beta_mean = beta_sum * h * w``; 46 x 30 cells for the paper config).

The study does not state beta; :data:`DEFAULT_BETA` is a hyperparameter of ours, small enough that
the classification terms dominate (0.001 on the cell mean ~ 7e-7 on the paper-size cell sum).
"""
from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from core.errors import InputError

__all__ = ["DEFAULT_BETA", "LOSS_TERMS", "gmic_labels", "gmic_loss", "gmic_loss_terms"]

DEFAULT_BETA = 1e-3
#: per-image terms returned by :func:`gmic_loss_terms` (``total`` is the loss).
LOSS_TERMS = ("global", "local", "fusion", "saliency_l1", "total")
_NEEDED = ("saliency_logits", "local_logits", "fusion_logits")


def gmic_labels(malignant, benign=None) -> Tensor:
    """(N, 2) float32 labels in GMIC's column order (benign, malignant).

    ``benign`` is None when the data has no benign findings: that column is then 0, as in the
    study. Values must be 0 or 1.
    """
    m = torch.as_tensor(malignant, dtype=torch.float32).reshape(-1)
    b = torch.zeros_like(m) if benign is None else torch.as_tensor(benign, dtype=torch.float32).reshape(-1)
    if b.shape != m.shape:
        raise InputError(f"benign labels have {b.numel()} values but malignant labels {m.numel()}; pass one per image")
    labels = torch.stack((b, m), dim=1)
    if not bool(((labels == 0) | (labels == 1)).all()):
        raise InputError("GMIC labels must be 0 or 1 (benign, malignant per image)")
    return labels


def _global_bce(saliency_logits: Tensor, labels: Tensor, percent_t: float) -> Tensor:
    """BCE of y_global (top-t mean of sigmoid cells) from the saliency logits, (N, C)."""
    n, c, h, w = saliency_logits.shape
    t = max(1, int(round(h * w * float(percent_t))))  # GMIC's own count (top_t_percent_pool)
    top = saliency_logits.reshape(n, c, h * w).topk(t, dim=2).values
    log_p = torch.logsumexp(F.logsigmoid(top), dim=2) - math.log(t)
    log_q = torch.logsumexp(F.logsigmoid(-top), dim=2) - math.log(t)
    return -(labels * log_p + (1.0 - labels) * log_q)


def gmic_loss_terms(outputs: Mapping[str, Tensor], labels: Tensor, *, percent_t: float,
                    beta: float = DEFAULT_BETA) -> dict[str, Tensor]:
    """Per-image terms of the study's loss, float32, each of shape (N,).

    Parameters
    ----------
    outputs : the dict of ``GMIC.forward(x, intermediates=True)`` (needs ``saliency_logits``,
        ``local_logits``, ``fusion_logits``).
    labels : Tensor of shape (N, C), 0/1, columns (benign, malignant): see :func:`gmic_labels`.
    percent_t : the model's ``config.percent_t`` (top-t pooling of y_global).
    beta : weight of the saliency L1 term (mean over cells, summed over classes).

    Returns
    -------
    dict with keys :data:`LOSS_TERMS`: ``global``, ``local``, ``fusion`` (BCEs summed over the
    classes), ``saliency_l1`` (unweighted, summed over classes) and ``total`` (the loss per image).
    """
    missing = [k for k in _NEEDED if k not in outputs]
    if missing:
        raise InputError(f"GMIC outputs lack {missing}; call the model with intermediates=True")
    if not (beta >= 0 and math.isfinite(beta)):
        raise InputError(f"beta must be a finite number >= 0; got {beta!r}")
    sal = outputs["saliency_logits"]
    if labels.dim() != 2 or labels.shape != outputs["local_logits"].shape:
        raise InputError(f"labels have shape {tuple(labels.shape)}; pass {tuple(outputs['local_logits'].shape)} "
                         "(one row per image, columns benign, malignant)")
    with torch.autocast(device_type=sal.device.type, enabled=False):
        y = labels.to(device=sal.device, dtype=torch.float32)
        sal = sal.float()
        terms = {
            "global": _global_bce(sal, y, percent_t).sum(dim=1),
            "local": F.binary_cross_entropy_with_logits(
                outputs["local_logits"].float(), y, reduction="none").sum(dim=1),
            "fusion": F.binary_cross_entropy_with_logits(
                outputs["fusion_logits"].float(), y, reduction="none").sum(dim=1),
            "saliency_l1": torch.sigmoid(sal).mean(dim=(2, 3)).sum(dim=1),
        }
        terms["total"] = terms["global"] + terms["local"] + terms["fusion"] + beta * terms["saliency_l1"]
    return terms


def gmic_loss(outputs: Mapping[str, Tensor], labels: Tensor, *, percent_t: float,
              beta: float = DEFAULT_BETA, reduction: str = "mean") -> Tensor:
    """The study's loss, a float32 scalar: the mean (or ``reduction="sum"``) over the images.

    ``"sum"`` serves epoch totals and distributed steps whose ranks hold unequal shares of a
    global batch (``models.training.distributed.rank_batches``): divide by the global batch size.
    """
    if reduction not in ("mean", "sum"):
        raise InputError(f"reduction must be 'mean' or 'sum'; got {reduction!r}")
    total = gmic_loss_terms(outputs, labels, percent_t=percent_t, beta=beta)["total"]
    return total.mean() if reduction == "mean" else total.sum()
