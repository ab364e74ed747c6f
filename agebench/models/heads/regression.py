"""``regression``: one scalar per image, trained with a regression loss in years (agebench's original head)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from agebench.errors import UserError
from agebench.models.heads.base import AgeHead
from agebench.models.heads.registry import register_head
from agebench.models.losses import build_loss


@register_head("regression")
class RegressionHead(AgeHead):
    """Direct regression: age = mu + sigma * f(x), loss(age, y) with l1, mse, smooth_l1 or adaptive.

    The standardised target (Maroun et al. 2025; ``age_mean``/``age_std`` are the training split's) centres the
    untrained output on the training ages instead of 0; the loss is computed in years, so ``mse`` is
    mean((age - y)^2) and ``adaptive`` is Dornaika et al. 2020's mean((1+s) e^2 / (|e| + s)), e = y - age.
    The age range is not used: predictions are unbounded.
    """

    uses_age_range = False

    def __init__(
        self,
        num_features: int,
        age_range: Sequence[float] | None = None,
        hidden: int = 256,
        dropout: float = 0.0,
        loss: str = "adaptive",
        loss_kwargs: Mapping[str, Any] | None = None,
        age_mean: float = 0.0,
        age_std: float = 1.0,
        lr_scale: float = 1.0,
    ) -> None:
        super().__init__(num_features, age_range, hidden, dropout, lr_scale=lr_scale)
        if not float(age_std) > 0:
            raise UserError(f"head 'regression': age_std must be > 0, got {age_std}")
        self.loss_fn = build_loss(loss, **dict(loss_kwargs or {}))
        self.mlp = self.make_mlp(nn.Linear(self.width, 1))
        # Buffers, so the checkpoint carries them; the module used to own them (see AgeRegressor's load hook).
        self.register_buffer("age_mean", torch.tensor(float(age_mean)))
        self.register_buffer("age_std", torch.tensor(float(age_std)))

    def decode(self, raw: torch.Tensor) -> torch.Tensor:
        """``[B, 1]`` standardised outputs -> ``[B]`` ages in years."""
        return raw.squeeze(-1) * self.age_std + self.age_mean

    def loss(self, raw: torch.Tensor, ages: torch.Tensor) -> torch.Tensor:
        return self.loss_fn(self.decode(raw), ages.float())
