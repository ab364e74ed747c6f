"""Age-estimation metrics: MAE, RMSE and the cumulative score CS@k.

CS@k is the share of images whose absolute error (raw prediction, not rounded) is at most k years.
:class:`CumulativeScore` is the torchmetrics version used during training (exact under DDP, because its
states are counts that are summed across processes); :func:`regression_metrics` computes the same numbers
from plain arrays for code that must not import Lightning (leaderboard, result files).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from torchmetrics import Metric

DEFAULT_KS: tuple[int, ...] = tuple(range(1, 11))


def _check_ks(ks: Iterable[int]) -> tuple[int, ...]:
    ks = tuple(int(k) for k in ks)
    if not ks or any(k < 0 for k in ks) or len(set(ks)) != len(ks):
        raise ValueError(f"ks must be distinct non-negative integers, got {ks}")
    return ks


class CumulativeScore(Metric):
    """CS@k for every k in ``ks``; ``compute()`` returns a float tensor of shares in the order of ``ks``."""

    full_state_update = False
    is_differentiable = False
    higher_is_better = True

    def __init__(self, ks: Iterable[int] = DEFAULT_KS, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ks = _check_ks(ks)
        self.add_state("hits", default=torch.zeros(len(self.ks), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        if preds.shape != target.shape:
            raise ValueError(f"preds {tuple(preds.shape)} and target {tuple(target.shape)} differ in shape")
        # float32, not float64: MPS has no float64, and ages need no more precision.
        err = (preds.detach().float() - target.detach().float()).abs().reshape(-1, 1)
        ks = torch.tensor(self.ks, dtype=torch.float32, device=err.device).reshape(1, -1)
        self.hits += (err <= ks).sum(dim=0)
        self.total += err.shape[0]

    def compute(self) -> torch.Tensor:
        if self.total == 0:
            raise ValueError("CumulativeScore.compute() called before any update")
        return self.hits.float() / self.total


def regression_metrics(y_true: Any, y_pred: Any, ks: Iterable[int] = DEFAULT_KS) -> dict[str, Any]:
    """``{"n", "mae", "rmse", "cs": {k: share}, "cs5"}`` from two equal-length 1-D arrays of ages in years.

    ``cs5`` is duplicated at the top level because it is the headline CS number in the literature; it is
    computed even when 5 is not among ``ks``.
    """
    t = np.asarray(y_true, dtype=np.float64).reshape(-1)
    p = np.asarray(y_pred, dtype=np.float64).reshape(-1)
    if t.shape != p.shape:
        raise ValueError(f"y_true has {t.size} values, y_pred {p.size}")
    if t.size == 0:
        raise ValueError("no values to score")
    if not (np.isfinite(t).all() and np.isfinite(p).all()):
        raise ValueError("y_true / y_pred contain NaN or inf")
    err = np.abs(p - t)
    return {
        "n": int(t.size),
        "mae": float(err.mean()),
        "rmse": float(np.sqrt(np.mean(err**2))),
        "cs": {k: float(np.mean(err <= k)) for k in _check_ks(ks)},
        "cs5": float(np.mean(err <= 5)),
    }
