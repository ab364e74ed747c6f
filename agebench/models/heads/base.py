"""The head contract, the shared MLP trunk and the integer age range.

A head turns a backbone's pooled features into an age. Its three jobs are kept apart so that the LightningModule
never needs to know which method it trains:

* ``forward(features [B, F]) -> raw [B, ...]``: whatever the method outputs (a scalar, K logits, K-1 rank logits);
* ``loss(raw, ages [B]) -> scalar``: the method's training loss against ages in years;
* ``decode(raw) -> ages [B]``: the predicted age in years;
* ``posterior(raw) -> [B, K]`` probabilities over the integer ages ``min_age..max_age``, where the method
  defines one (None otherwise);
* ``explained_age(raw) -> [B]``: a *differentiable* age for Grad-CAM: the decoded age itself, or the expectation
  where ``decode`` is an argmax or a threshold count (whose gradient is zero almost everywhere);
* ``init_from_ages(ages [N])``: optional; called once on a fresh head, before training, with the training split's
  ages (not on reload: the weights it sets are in the checkpoint). The built-ins start their output biases at
  the training label prior there (``bias_init: prior``);
* ``lr_scale``: optional float attribute; the head's parameters train at ``optim.lr * lr_scale`` (default 1).

:class:`AgeHead` implements the trunk and the age-range bookkeeping; built-in heads subclass it, third-party
heads may (they need only honour the contract above).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from agebench.errors import UserError

AgeRange = tuple[int, int]


def check_age_range(age_range: Sequence[float] | None, who: str) -> AgeRange:
    """``[min_age, max_age]`` as two integers with min < max; anything else is the user's error (one line)."""
    if age_range is None:
        raise UserError(f"head {who!r} needs an age range [min_age, max_age] (model.age_range)")
    if len(age_range) != 2:
        raise UserError(f"head {who!r}: age range must be [min_age, max_age], got {list(age_range)!r}")
    lo, hi = age_range
    if any(isinstance(v, bool) or not float(v).is_integer() for v in (lo, hi)):
        raise UserError(f"head {who!r}: age range bounds must be whole years, got [{lo}, {hi}]")
    if not lo < hi:
        raise UserError(f"head {who!r}: age range [{lo:g}, {hi:g}] needs min_age < max_age")
    return int(lo), int(hi)


def age_range_of(ages: np.ndarray) -> AgeRange:
    """The default range: floor of the youngest to ceil of the oldest training age (at least two ages wide)."""
    lo, hi = math.floor(float(np.min(ages))), math.ceil(float(np.max(ages)))
    return lo, max(hi, lo + 1)


def count_outside(ages: np.ndarray, age_range: AgeRange) -> int:
    """How many ages fall outside ``[min_age, max_age]`` (integer-age heads clamp them in the loss)."""
    ages = np.asarray(ages, dtype=np.float64)
    return int(((ages < age_range[0]) | (ages > age_range[1])).sum())


def trunk_layers(in_features: int, hidden: int, dropout: float) -> tuple[list[nn.Module], int]:
    """The shared trunk: ``in -> hidden -> ReLU -> dropout`` (``hidden=0``: dropout only), and its width.

    The two-layer 256-wide default is the head of Maroun et al. 2025 (768 -> 256 -> 1 on the hybrid); every head
    puts its own output layer on this trunk, so heads differ only in what they predict and how they are trained.
    """
    if isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 0:
        raise UserError(f"head hidden width must be an int >= 0, got {hidden!r}")
    if not 0.0 <= float(dropout) < 1.0:
        raise UserError(f"head dropout must be in [0, 1), got {dropout!r}")
    if hidden == 0:
        return [nn.Dropout(dropout)], in_features
    return [nn.Linear(in_features, hidden), nn.ReLU(), nn.Dropout(dropout)], hidden


def check_lr_scale(head: str, value: float) -> float:
    """``lr_scale`` as a float > 0, else a one-line UserError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not float(value) > 0:
        raise UserError(f"head {head!r}: lr_scale must be a number > 0, got {value!r}")
    return float(value)


PRIOR_SMOOTHING = 1.0  # pseudo-count added to every integer age of the label prior (Laplace smoothing)


def age_prior(ages: torch.Tensor | np.ndarray, min_age: int, max_age: int) -> torch.Tensor:
    """``[K]``: the share of each integer age ``min_age..max_age`` among ``ages`` (clamped, rounded half to
    even, as the heads' class index), plus :data:`PRIOR_SMOOTHING` pseudo-counts so that no age has share 0."""
    ages = torch.as_tensor(np.asarray(ages, dtype=np.float32)).clamp(min_age, max_age)
    index = (ages - min_age).round().long()
    counts = torch.bincount(index, minlength=max_age - min_age + 1).double() + PRIOR_SMOOTHING
    return (counts / counts.sum()).float()


def survival(prior: torch.Tensor) -> torch.Tensor:
    """``[K-1]``: P(j > k) for k = 0..K-2 under a prior over the K classes (each strictly in (0, 1))."""
    return (1.0 - prior.double().cumsum(0)[:-1]).clamp(1e-12, 1 - 1e-12).float()


def check_choice(head: str, key: str, value: object, choices: Sequence[str]) -> str:
    """``value`` if it is one of ``choices``, else a one-line UserError naming the head and the setting."""
    if value not in choices:
        raise UserError(f"head {head!r}: {key} must be one of {', '.join(choices)}, got {value!r}")
    return str(value)


class AgeHead(nn.Module):
    """Base class of the built-in heads: the trunk, the integer age grid and the contract's defaults.

    Subclasses call ``super().__init__`` and then set ``self.mlp = self.make_mlp(output_layer)``; the module
    list keeps the indices of the original regression head (``mlp.0`` trunk linear, ``mlp.3`` output), so its
    checkpoints load unchanged.
    """

    name: ClassVar[str] = ""  # set by register_head
    uses_age_range: ClassVar[bool] = True  # False: the head predicts unbounded ages and ignores age_range

    def __init__(
        self,
        num_features: int,
        age_range: Sequence[float] | None,
        hidden: int = 256,
        dropout: float = 0.0,
        *,
        lr_scale: float = 1.0,
    ) -> None:
        super().__init__()
        self.in_features = num_features
        self.hidden = hidden
        self.lr_scale = check_lr_scale(self.name or type(self).__name__, lr_scale)
        self._trunk, self.width = trunk_layers(num_features, hidden, dropout)
        if self.uses_age_range:
            self.min_age, self.max_age = check_age_range(age_range, self.name or type(self).__name__)
            # The integer ages the classes stand for; not persistent: rebuilt from the (stored) age range.
            grid = torch.arange(self.min_age, self.max_age + 1, dtype=torch.float32)
            self.register_buffer("ages", grid, persistent=False)

    @property
    def num_classes(self) -> int:
        """K: the integer ages ``min_age..max_age``."""
        return self.max_age - self.min_age + 1

    def make_mlp(self, output: nn.Module) -> nn.Sequential:
        return nn.Sequential(*self._trunk, output)

    @property
    def output_layer(self) -> nn.Module:
        """The layer on top of the trunk (``mlp[-1]``)."""
        return self.mlp[-1]

    def init_from_ages(self, ages: torch.Tensor | np.ndarray) -> None:
        """Called once before training with the training split's ages; the built-ins set their biases here."""

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.mlp(features)

    def loss(self, raw: torch.Tensor, ages: torch.Tensor) -> torch.Tensor:
        """The training loss (a scalar) of ``raw`` outputs against true ``ages`` [B]; every head defines it."""
        raise NotImplementedError

    def decode(self, raw: torch.Tensor) -> torch.Tensor:
        """Ages [B] in years from ``raw`` outputs; every head defines it."""
        raise NotImplementedError

    def posterior(self, raw: torch.Tensor) -> torch.Tensor | None:
        """``[B, K]`` probabilities of the ages ``min_age..max_age``; None where the method defines none."""
        return None

    def explained_age(self, raw: torch.Tensor) -> torch.Tensor:
        """The age Grad-CAM differentiates; the decoded age unless that is piecewise constant."""
        return self.decode(raw)

    # ---------------------------------------------------------------- helpers for integer-age heads

    def clamped(self, ages: torch.Tensor) -> torch.Tensor:
        """Ages in years clamped into the range (train.py has already said how many were outside)."""
        return ages.float().clamp(self.min_age, self.max_age)

    def class_index(self, ages: torch.Tensor) -> torch.Tensor:
        """The nearest integer age's class, ``0..K-1`` (fractional ages round half to even)."""
        return (self.clamped(ages) - self.min_age).round().long()

    def expectation(self, probs: torch.Tensor) -> torch.Tensor:
        """``sum_j p_j * age_j``: the mean of a posterior over the integer ages (DEX)."""
        return (probs * self.ages).sum(-1)

    def extra_repr(self) -> str:
        rng = f", ages {self.min_age}..{self.max_age} (K={self.num_classes})" if self.uses_age_range else ""
        scale = f", lr_scale={self.lr_scale:g}" if self.lr_scale != 1.0 else ""
        return f"in_features={self.in_features}, hidden={self.hidden}{rng}{scale}"
