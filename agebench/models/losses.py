"""Regression losses for age, by name, so configs can switch them without code.

All losses take ``(pred, target)`` tensors of equal shape in years and return the batch mean.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from agebench.errors import UserError


class AdaptiveRegressionLoss(nn.Module):
    """Adaptive loss of Dornaika, Bekhouche & Arganda-Carreras (ESWA 2020): mean((1+s) e^2 / (|e| + s)).

    With e = target - pred it behaves like ((1+s)/s) e^2 for |e| << s (smooth, strong gradients near the
    answer) and like (1+s)|e| for |e| >> s (robust to mislabelled ages); ``s`` sets the crossover in years.
    """

    def __init__(self, s: float = 2.0) -> None:
        super().__init__()
        if not s > 0:
            raise UserError(f"adaptive loss: s must be > 0, got {s}")
        self.s = float(s)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        err = target - pred
        return ((1.0 + self.s) * err.square() / (err.abs() + self.s)).mean()


_LOSSES: dict[str, type[nn.Module]] = {
    "l1": nn.L1Loss,
    "mse": nn.MSELoss,
    "smooth_l1": nn.SmoothL1Loss,  # kwarg beta (years), default 1
    "adaptive": AdaptiveRegressionLoss,  # kwarg s (years), default 2
}


def list_losses() -> list[str]:
    return list(_LOSSES)


def build_loss(name: str, **kwargs: Any) -> nn.Module:
    """The loss ``name`` (one of :func:`list_losses`) with its kwargs; bad names or kwargs are UserErrors."""
    if name not in _LOSSES:
        raise UserError(f"unknown loss {name!r}; choose one of: {', '.join(_LOSSES)}")
    try:
        return _LOSSES[name](**kwargs)
    except TypeError as err:
        raise UserError(f"loss {name!r}: bad arguments {kwargs}: {err}") from err
