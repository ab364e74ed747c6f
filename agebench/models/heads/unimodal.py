"""``unimodal``: a posterior over the integer ages that is unimodal by construction (Beckham & Pal, ICML 2017)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from agebench.errors import UserError
from agebench.models.heads.base import AgeHead, age_prior, check_choice
from agebench.models.heads.registry import register_head

DECODES = ("expectation", "argmax")
MIN_TAU = 1e-3  # keeps 1/tau finite when the learned temperature collapses
BIAS_INITS = ("prior", "default")
LR_SCALE = 1.0  # the head's learning rate over optim.lr


@register_head("unimodal")
class UnimodalHead(AgeHead):
    """Binomial unimodal posterior with a fixed or learned temperature (Beckham & Pal, ICML 2017).

    Formulation implemented: the trunk outputs a (and b when ``tau: null``); q = s(a) is a binomial success
    probability and tau the fixed ``tau`` (default 1, the plain binomial) or, with ``tau: null`` (the paper's
    learned-temperature variant, agebench's default before issue 25), tau = softplus(b) per image. A learned tau
    grows to cover the whole age spread before the features carry any age, and the gradient reaching a is
    divided by it: 3 epochs from scratch ended at the mean (issue 25). ``bias_init: prior`` (default) starts a
    at the training mean's position, ``default`` is PyTorch's init. With n = K-1 and class
    k = 0..n (age min_age + k),
        log B_k = log C(n, k) + k log q + (n - k) log(1 - q),    p_k = softmax_k(log B_k / tau),
    loss = -log p_{j*} (cross-entropy), decode = sum_k p_k a_k (or ``decode: argmax``).
    Why this one rather than Li et al.'s 2022 unimodal-concentrated loss: log B_k is concave in k, so p is
    unimodal for every output and every tau (a guarantee, not a penalty that training may trade away), and tau
    sets how concentrated it is; the whole posterior is two numbers per image, so it can be checked
    by hand.
    """

    def __init__(
        self,
        num_features: int,
        age_range: Sequence[float] | None,
        hidden: int = 256,
        dropout: float = 0.0,
        decode: str = "expectation",
        tau: float | None = 1.0,
        bias_init: str = "prior",
        lr_scale: float = LR_SCALE,
    ) -> None:
        super().__init__(num_features, age_range, hidden, dropout, lr_scale=lr_scale)
        check_choice("unimodal", "decode", decode, DECODES)
        self.bias_init = check_choice("unimodal", "bias_init", bias_init, BIAS_INITS)
        if tau is not None and (isinstance(tau, bool) or not float(tau) > 0):
            raise UserError(f"head 'unimodal': tau must be > 0 or null (learned), got {tau!r}")
        self.decoding, self.tau = decode, None if tau is None else float(tau)
        self.mlp = self.make_mlp(nn.Linear(self.width, 1 if self.tau is not None else 2))
        n = torch.tensor(float(self.num_classes - 1))
        k = torch.arange(self.num_classes, dtype=torch.float32)
        log_binom = torch.lgamma(n + 1) - torch.lgamma(k + 1) - torch.lgamma(n - k + 1)
        self.register_buffer("log_binom", log_binom, persistent=False)
        self.register_buffer("k", k, persistent=False)
        if self.bias_init == "prior":
            with torch.no_grad():
                self.output_layer.bias[0] = 0.0  # q = 1/2: the middle of the range until init_from_ages

    def init_from_ages(self, ages) -> None:
        """``bias_init: prior``: a's bias is logit((m - min_age) / (K-1)), m the training split's mean age (of the
        smoothed label prior), so the untrained posterior's mode sits at the mean; ``default``: PyTorch's init."""
        if self.bias_init == "prior":
            prior = age_prior(ages, self.min_age, self.max_age)
            q = (prior * self.k).sum() / (self.num_classes - 1)
            with torch.no_grad():
                self.output_layer.bias[0] = q.clamp(1e-4, 1 - 1e-4).logit()

    def temperature(self, raw: torch.Tensor) -> torch.Tensor:
        """``[B, 1]`` temperatures."""
        if self.tau is not None:
            return raw.new_full((raw.shape[0], 1), self.tau)
        return F.softplus(raw[:, 1:2]).clamp_min(MIN_TAU)

    def log_posterior(self, raw: torch.Tensor) -> torch.Tensor:
        a = raw[:, :1]
        n = self.num_classes - 1
        log_b = self.log_binom + self.k * F.logsigmoid(a) + (n - self.k) * F.logsigmoid(-a)
        return (log_b / self.temperature(raw)).log_softmax(-1)

    def posterior(self, raw: torch.Tensor) -> torch.Tensor:
        return self.log_posterior(raw).exp()

    def decode(self, raw: torch.Tensor) -> torch.Tensor:
        if self.decoding == "argmax":
            return self.ages[self.log_posterior(raw).argmax(-1)]
        return self.expectation(self.posterior(raw))

    def explained_age(self, raw: torch.Tensor) -> torch.Tensor:
        return self.expectation(self.posterior(raw))

    def loss(self, raw: torch.Tensor, ages: torch.Tensor) -> torch.Tensor:
        return F.nll_loss(self.log_posterior(raw), self.class_index(ages))
