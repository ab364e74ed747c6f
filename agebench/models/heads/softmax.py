"""Heads with a softmax over the K integer ages min..max: classification (DEX), mean-variance, DLDL, DLDL-v2, SORD.

They share the output layer (K logits) and its initialisation (agebench's defaults, issue 25: ``bias_init: prior``,
b_j = log of the training label prior, and ``weight_init: ordinal``, rank-one rows W_j = z_j w; ``default`` for
either is PyTorch's, the papers'), the posterior p = softmax(logits) and the decode: the expectation
sum_j p_j a_j (DEX, Rothe et al. 2018) by default, or ``decode: argmax``. They differ only in the loss. In the
formulas, a_j are the integer ages, y the true age clamped into [min_age, max_age] and j* its nearest class.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from agebench.errors import UserError
from agebench.models.heads.base import AgeHead, age_prior, check_choice
from agebench.models.heads.registry import register_head

DECODES = ("expectation", "argmax")
BIAS_INITS = ("prior", "default")
WEIGHT_INITS = ("ordinal", "default")
LR_SCALE = 1.0  # the head's learning rate over optim.lr


def _positive(head: str, **values: float) -> None:
    for key, value in values.items():
        if isinstance(value, bool) or not float(value) > 0:
            raise UserError(f"head {head!r}: {key} must be > 0, got {value!r}")


def _non_negative(head: str, **values: float) -> None:
    for key, value in values.items():
        if isinstance(value, bool) or not float(value) >= 0:
            raise UserError(f"head {head!r}: {key} must be >= 0, got {value!r}")


def ordinal_weight_(weight: torch.Tensor, ages: torch.Tensor) -> None:
    """``weight_init: ordinal`` (agebench's): W_j = z_j w, z_j = (a_j - mean a) / sd a over the grid, w the first
    row of PyTorch's init. The logits are then log prior_j + z_j (w . h): an exponential tilt of the prior whose
    mean moves with w . h, so the untrained head is a regression on w . h, and the gradient that reaches the
    features, sum_j (p_j - q_j) W_j, is (E_p[z] - E_q[z]) w: an ordinal signal. PyTorch's init (``default``,
    the papers') gives K unrelated rows, whose gradient is noise until every class has been seen often."""
    with torch.no_grad():
        z = (ages - ages.mean()) / ages.std()
        weight.copy_(z.unsqueeze(-1) * weight[:1])


class SoftmaxHead(AgeHead):
    """K logits; posterior softmax; decode by expectation or argmax. Subclasses define ``loss``."""

    def __init__(
        self,
        num_features: int,
        age_range: Sequence[float] | None,
        hidden: int = 256,
        dropout: float = 0.0,
        decode: str = "expectation",
        bias_init: str = "prior",
        weight_init: str = "ordinal",
        lr_scale: float = LR_SCALE,
    ) -> None:
        super().__init__(num_features, age_range, hidden, dropout, lr_scale=lr_scale)
        self.decoding = check_choice(self.name, "decode", decode, DECODES)
        self.bias_init = check_choice(self.name, "bias_init", bias_init, BIAS_INITS)
        self.weight_init = check_choice(self.name, "weight_init", weight_init, WEIGHT_INITS)
        self.mlp = self.make_mlp(nn.Linear(self.width, self.num_classes))
        if self.weight_init == "ordinal":
            ordinal_weight_(self.output_layer.weight, self.ages)
        if self.bias_init == "prior":
            nn.init.zeros_(self.output_layer.bias)  # a uniform prior until init_from_ages gives the labels'

    def init_from_ages(self, ages) -> None:
        """``bias_init: prior``: b_j = log prior_j (the training split's, smoothed), so the untrained posterior
        is the label prior and its expectation the training mean; ``default``: PyTorch's uniform init."""
        if self.bias_init == "prior":
            with torch.no_grad():
                self.output_layer.bias.copy_(age_prior(ages, self.min_age, self.max_age).log())

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
    each term a batch mean; the paper's lambda1 = 0.2, lambda2 = 0.05. agebench's default lambda2 is 0.01: from
    scratch, the variance term (consistent across the batch while the mean term's sign is not) concentrates the
    posterior on the training mean before the features carry any age, and a concentrated posterior's mean no
    longer moves (3 epochs on 2000 synthetic faces: issue 25). ``lambda2: 0.05`` is the paper's. Decode: m.
    """

    def __init__(
        self,
        num_features: int,
        age_range: Sequence[float] | None,
        hidden: int = 256,
        dropout: float = 0.0,
        decode: str = "expectation",
        lambda1: float = 0.2,
        lambda2: float = 0.01,
        bias_init: str = "prior",
        weight_init: str = "ordinal",
        lr_scale: float = LR_SCALE,
    ) -> None:
        super().__init__(num_features, age_range, hidden, dropout, decode, bias_init, weight_init, lr_scale)
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
        bias_init: str = "prior",
        weight_init: str = "ordinal",
        lr_scale: float = LR_SCALE,
    ) -> None:
        super().__init__(num_features, age_range, hidden, dropout, decode, bias_init, weight_init, lr_scale)
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
        bias_init: str = "prior",
        weight_init: str = "ordinal",
        lr_scale: float = LR_SCALE,
    ) -> None:
        super().__init__(num_features, age_range, hidden, dropout, decode, sigma, bias_init, weight_init, lr_scale)
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
        bias_init: str = "prior",
        weight_init: str = "ordinal",
        lr_scale: float = LR_SCALE,
    ) -> None:
        super().__init__(num_features, age_range, hidden, dropout, decode, bias_init, weight_init, lr_scale)
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
