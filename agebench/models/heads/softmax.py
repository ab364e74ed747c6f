"""Heads with a softmax over the K integer ages min..max: classification (DEX), mean-variance, DLDL, DLDL-v2, SORD.

They share the output layer (K logits), the posterior p = softmax(logits) and the decode: the expectation
sum_j p_j a_j (DEX, Rothe et al. 2018) by default, or ``decode: argmax``. They differ only in the loss. In the
formulas, a_j are the integer ages, y the true age clamped into [min_age, max_age] and j* its nearest class.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from agebench.errors import UserError
from agebench.models.heads.base import AgeHead, check_choice
from agebench.models.heads.registry import register_head

DECODES = ("expectation", "argmax")


def _positive(head: str, **values: float) -> None:
    for key, value in values.items():
        if isinstance(value, bool) or not float(value) > 0:
            raise UserError(f"head {head!r}: {key} must be > 0, got {value!r}")


def _non_negative(head: str, **values: float) -> None:
    for key, value in values.items():
        if isinstance(value, bool) or not float(value) >= 0:
            raise UserError(f"head {head!r}: {key} must be >= 0, got {value!r}")


class SoftmaxHead(AgeHead):
    """K logits; posterior softmax; decode by expectation or argmax. Subclasses define ``loss``."""

    def __init__(
        self,
        num_features: int,
        age_range: Sequence[float] | None,
        hidden: int = 256,
        dropout: float = 0.0,
        decode: str = "expectation",
    ) -> None:
        super().__init__(num_features, age_range, hidden, dropout)
        self.decoding = check_choice(self.name, "decode", decode, DECODES)
        self.mlp = self.make_mlp(nn.Linear(self.width, self.num_classes))

    def posterior(self, raw: torch.Tensor) -> torch.Tensor:
        return raw.softmax(-1)

    def decode(self, raw: torch.Tensor) -> torch.Tensor:
        if self.decoding == "argmax":
            return self.ages[raw.argmax(-1)]
        return self.expectation(self.posterior(raw))

    def explained_age(self, raw: torch.Tensor) -> torch.Tensor:
        return self.expectation(self.posterior(raw))  # argmax has no gradient: explain the expectation

    def kl_to(self, target: torch.Tensor, raw: torch.Tensor) -> torch.Tensor:
        """Batch mean of KL(target || softmax(raw)) = sum_j q_j (log q_j - log p_j)."""
        return F.kl_div(raw.log_softmax(-1), target, reduction="batchmean")


@register_head("classification")
class ClassificationHead(SoftmaxHead):
    """Classification over integer ages, DEX (Rothe, Timofte & Van Gool, IJCV 2018).

    loss = -log p_{j*} (cross-entropy); decode = sum_j p_j a_j (DEX), or ``decode: argmax``.
    """

    def loss(self, raw: torch.Tensor, ages: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(raw, self.class_index(ages))


@register_head("mean_variance")
class MeanVarianceHead(SoftmaxHead):
    """Mean-variance loss (Pan, Han, Shan & Chen, CVPR 2018).

    With m = sum_j p_j a_j: loss = -log p_{j*} + lambda1 * (m - y)^2 / 2 + lambda2 * sum_j p_j (a_j - m)^2,
    each term a batch mean; the paper's lambda1 = 0.2, lambda2 = 0.05. Decode: m.
    """

    def __init__(
        self,
        num_features: int,
        age_range: Sequence[float] | None,
        hidden: int = 256,
        dropout: float = 0.0,
        decode: str = "expectation",
        lambda1: float = 0.2,
        lambda2: float = 0.05,
    ) -> None:
        super().__init__(num_features, age_range, hidden, dropout, decode)
        _non_negative("mean_variance", lambda1=lambda1, lambda2=lambda2)
        self.lambda1, self.lambda2 = float(lambda1), float(lambda2)

    def terms(self, raw: torch.Tensor, ages: torch.Tensor) -> dict[str, torch.Tensor]:
        """The three loss terms, unweighted: ``softmax``, ``mean`` and ``variance``."""
        p = self.posterior(raw)
        m = self.expectation(p)
        return {
            "softmax": F.cross_entropy(raw, self.class_index(ages)),
            "mean": 0.5 * (m - self.clamped(ages)).square().mean(),
            "variance": (p * (self.ages - m.unsqueeze(-1)).square()).sum(-1).mean(),
        }

    def loss(self, raw: torch.Tensor, ages: torch.Tensor) -> torch.Tensor:
        t = self.terms(raw, ages)
        return t["softmax"] + self.lambda1 * t["mean"] + self.lambda2 * t["variance"]


@register_head("dldl")
class DLDLHead(SoftmaxHead):
    """Deep label distribution learning (Gao, Xing, Xie, Wu & Geng, IEEE TIP 2017).

    Target q_j = exp(-(a_j - y)^2 / (2 sigma^2)) / Z (a Gaussian on the age grid, sigma 2 years);
    loss = KL(q || p) = sum_j q_j log(q_j / p_j); decode = sum_j p_j a_j.
    """

    def __init__(
        self,
        num_features: int,
        age_range: Sequence[float] | None,
        hidden: int = 256,
        dropout: float = 0.0,
        decode: str = "expectation",
        sigma: float = 2.0,
    ) -> None:
        super().__init__(num_features, age_range, hidden, dropout, decode)
        _positive(self.name, sigma=sigma)
        self.sigma = float(sigma)

    def target_distribution(self, ages: torch.Tensor) -> torch.Tensor:
        """``[B, K]``: the Gaussian label distribution around each (clamped) age, normalised on the grid."""
        d = self.ages - self.clamped(ages).unsqueeze(-1)
        return (-d.square() / (2 * self.sigma**2)).softmax(-1)

    def loss(self, raw: torch.Tensor, ages: torch.Tensor) -> torch.Tensor:
        return self.kl_to(self.target_distribution(ages), raw)


@register_head("dldl_v2")
class DLDLv2Head(DLDLHead):
    """DLDL-v2: label distribution plus expectation regression (Gao, Zhou, Wu & Geng, IJCAI 2018).

    loss = KL(q || p) + lam * |sum_j p_j a_j - y| (batch means), q the Gaussian of ``dldl`` (sigma 2), lam 1;
    decode = sum_j p_j a_j, the quantity the L1 term trains.
    """

    def __init__(
        self,
        num_features: int,
        age_range: Sequence[float] | None,
        hidden: int = 256,
        dropout: float = 0.0,
        decode: str = "expectation",
        sigma: float = 2.0,
        lam: float = 1.0,
    ) -> None:
        super().__init__(num_features, age_range, hidden, dropout, decode, sigma)
        _non_negative("dldl_v2", lam=lam)
        self.lam = float(lam)

    def loss(self, raw: torch.Tensor, ages: torch.Tensor) -> torch.Tensor:
        l1 = (self.expectation(self.posterior(raw)) - self.clamped(ages)).abs().mean()
        return super().loss(raw, ages) + self.lam * l1


@register_head("sord")
class SORDHead(SoftmaxHead):
    """Soft ordinal labels, SORD (Diaz & Marathe, CVPR 2019).

    Target q_j = exp(-scale * phi(a_j, y)) / Z with the metric penalty phi = (a_j - y)^2 (``metric: squared``,
    the default) or |a_j - y| (``metric: absolute``); loss = KL(q || p), which differs from the paper's
    cross-entropy by the constant entropy of q; decode = sum_j p_j a_j.
    """

    def __init__(
        self,
        num_features: int,
        age_range: Sequence[float] | None,
        hidden: int = 256,
        dropout: float = 0.0,
        decode: str = "expectation",
        metric: str = "squared",
        scale: float = 1.0,
    ) -> None:
        super().__init__(num_features, age_range, hidden, dropout, decode)
        if metric not in ("squared", "absolute"):
            raise UserError(f"head 'sord': metric must be 'squared' or 'absolute', got {metric!r}")
        _positive("sord", scale=scale)
        self.metric, self.scale = metric, float(scale)

    def target_distribution(self, ages: torch.Tensor) -> torch.Tensor:
        d = (self.ages - self.clamped(ages).unsqueeze(-1)).abs()
        phi = d.square() if self.metric == "squared" else d
        return (-self.scale * phi).softmax(-1)

    def loss(self, raw: torch.Tensor, ages: torch.Tensor) -> torch.Tensor:
        return self.kl_to(self.target_distribution(ages), raw)
