"""Ordinal-regression heads: K-1 binary tasks "is the age above a_k?" for the thresholds a_k = min_age + k,
k = 0..K-2. OR-CNN, CORAL and CORN differ in how the tasks share weights and how they are trained.

Shared notation: l_k are the K-1 outputs, s(.) the logistic sigmoid, j* the true age's class (clamped, nearest
integer) and y_k = [j* > k] its level labels. Decode (the papers'): age = min_age + sum_k [P(y > a_k) > 0.5];
``decode: expectation`` gives min_age + sum_k P(y > a_k) instead, the mean of the rank distribution, which is
also what Grad-CAM explains (the threshold count has no gradient).

Initialisation (agebench's defaults since issue 25; ``default`` / ``coral`` give the papers'): ``bias_init:
prior`` starts each task's bias at the training label prior's log-odds, so an untrained head predicts the
training median instead of one end of the range, and (OR-CNN, CORN) ``weight_init: shared`` starts every task
with the same weight row, so the features' first gradients say "older / younger" rather than K-1 unrelated
directions. In 3 epochs on 2000 synthetic faces, CORAL's coral-pytorch biases ended at 2.2x the mean
predictor's MAE (every threshold flipping at once: ages 0 or 100) and CORN at 1.0x (the median for all).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from agebench.models.heads.base import AgeHead, age_prior, check_choice, survival
from agebench.models.heads.registry import register_head

DECODES = ("threshold", "expectation")
LR_SCALE = 1.0  # the head's learning rate over optim.lr


class RankHead(AgeHead):
    """K-1 rank outputs; subclasses define the output layer, ``rank_probabilities`` and ``loss``."""

    def __init__(
        self,
        num_features: int,
        age_range: Sequence[float] | None,
        hidden: int = 256,
        dropout: float = 0.0,
        decode: str = "threshold",
        bias_init: str = "prior",
        lr_scale: float = LR_SCALE,
        bias_inits: Sequence[str] = ("prior", "default"),
    ) -> None:
        super().__init__(num_features, age_range, hidden, dropout, lr_scale=lr_scale)
        self.decoding = check_choice(self.name, "decode", decode, DECODES)
        self.bias_init = check_choice(self.name, "bias_init", bias_init, bias_inits)

    def _init_output(self, weight_init: str) -> None:
        """``weight_init: shared`` (agebench's): every task's weight row starts as the first row of PyTorch's
        init, w_k = w (the tasks then train apart), so the untrained head moves all thresholds with w . h, as
        CORAL's shared weight does, and the features receive sum_k (s(l_k) - y_k) w, an ordinal signal; the
        ``default`` (the papers') K-1 unrelated rows give them noise until every task has been trained. Then
        the uniform prior's biases, until init_from_ages sets the labels'."""
        check_choice(self.name, "weight_init", weight_init, ("shared", "default"))
        self.weight_init = weight_init
        if weight_init == "shared":
            with torch.no_grad():
                weight = self.output_layer.weight
                weight.copy_(weight[:1].clone().expand_as(weight))
        self._uniform_bias()

    def prior_bias(self, prior: torch.Tensor) -> torch.Tensor:
        """``[K-1]`` task biases that make the untrained head predict the label ``prior``: logit P(j > k)."""
        return survival(prior).logit()

    def init_from_ages(self, ages) -> None:
        """``bias_init: prior``: the K-1 biases start at the training label prior's log-odds (smoothed)."""
        if self.bias_init == "prior":
            with torch.no_grad():
                self.output_layer.bias.copy_(self.prior_bias(age_prior(ages, self.min_age, self.max_age)))

    def _uniform_bias(self) -> None:
        """Before init_from_ages: the biases of a uniform prior (a sane start for heads built without data)."""
        if self.bias_init == "prior":
            with torch.no_grad():
                self.output_layer.bias.copy_(self.prior_bias(torch.full((self.num_classes,), 1 / self.num_classes)))

    def levels(self, ages: torch.Tensor) -> torch.Tensor:
        """``[B, K-1]`` level labels y_k = [j* > k]."""
        tasks = torch.arange(self.num_classes - 1, device=ages.device)
        return (self.class_index(ages).unsqueeze(-1) > tasks).float()

    def rank_probabilities(self, raw: torch.Tensor) -> torch.Tensor:
        """``[B, K-1]``: P(y > a_k)."""
        return raw.sigmoid()

    def decode(self, raw: torch.Tensor) -> torch.Tensor:
        probs = self.rank_probabilities(raw)
        if self.decoding == "threshold":
            return self.min_age + (probs > 0.5).sum(-1).float()
        return self.min_age + probs.sum(-1)

    def explained_age(self, raw: torch.Tensor) -> torch.Tensor:
        return self.min_age + self.rank_probabilities(raw).sum(-1)


def binary_tasks_loss(raw: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """-sum_k [y_k log s(l_k) + (1 - y_k) log(1 - s(l_k))], averaged over the batch (CORAL's loss, unit weights)."""
    return F.binary_cross_entropy_with_logits(raw, levels, reduction="none").sum(-1).mean()


@register_head("orcnn")
class OrdinalCNNHead(RankHead):
    """OR-CNN (Niu, Zhou, Wang, Gao & Hua, CVPR 2016): K-1 independent binary classifiers.

    l_k = w_k . h + b_k with a separate weight vector per task (one Linear layer with K-1 outputs);
    loss = -sum_k [y_k log s(l_k) + (1 - y_k) log(1 - s(l_k))] (the paper's task weights lambda_k = 1).
    The probabilities need not decrease in k (rank inconsistency), so no posterior is defined.
    """

    def __init__(
        self,
        num_features: int,
        age_range: Sequence[float] | None,
        hidden: int = 256,
        dropout: float = 0.0,
        decode: str = "threshold",
        bias_init: str = "prior",
        weight_init: str = "shared",
        lr_scale: float = LR_SCALE,
    ) -> None:
        super().__init__(num_features, age_range, hidden, dropout, decode, bias_init, lr_scale)
        self.mlp = self.make_mlp(nn.Linear(self.width, self.num_classes - 1))
        self._init_output(weight_init)

    def loss(self, raw: torch.Tensor, ages: torch.Tensor) -> torch.Tensor:
        return binary_tasks_loss(raw, self.levels(ages))


class CoralLayer(nn.Module):
    """One weight vector shared by all K-1 tasks plus K-1 biases: l_k = w . h + b_k.

    The biases start at b_k = (K-1-k)/(K-1) (coral-pytorch's init, ``bias_init: coral``), at the log-odds of a
    uniform prior b_k = log((K-1-k)/(k+1)) (``uniform``), or there until the head's ``init_from_ages`` sets
    the training label prior's, b_k = logit P(j > k) (``prior``).
    """

    def __init__(self, in_features: int, num_classes: int, bias_init: str = "prior") -> None:
        super().__init__()
        self.weight = nn.Linear(in_features, 1, bias=False)
        k = torch.arange(num_classes - 1).float()
        if bias_init == "coral":
            bias = (num_classes - 1 - k) / (num_classes - 1)
        else:
            bias = torch.log((num_classes - 1 - k) / (k + 1))
        self.bias = nn.Parameter(bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight(x) + self.bias


@register_head("coral")
class CoralHead(RankHead):
    """CORAL (Cao, Mirjalili & Raschka, Pattern Recognition Letters 2020): rank-consistent ordinal regression.

    l_k = w . h + b_k with one shared w and K-1 biases, P(y > a_k) = s(l_k); the loss is OR-CNN's,
    -sum_k [y_k log s(l_k) + (1 - y_k) log(1 - s(l_k))]. Sharing w makes the optimum's biases non-increasing,
    so P(y > a_k) is too (rank consistency) and the threshold decode counts a prefix.
    """

    def __init__(
        self,
        num_features: int,
        age_range: Sequence[float] | None,
        hidden: int = 256,
        dropout: float = 0.0,
        decode: str = "threshold",
        bias_init: str = "prior",
        lr_scale: float = LR_SCALE,
    ) -> None:
        super().__init__(
            num_features, age_range, hidden, dropout, decode, bias_init, lr_scale, ("prior", "uniform", "coral")
        )
        self.mlp = self.make_mlp(CoralLayer(self.width, self.num_classes, self.bias_init))

    def loss(self, raw: torch.Tensor, ages: torch.Tensor) -> torch.Tensor:
        return binary_tasks_loss(raw, self.levels(ages))


@register_head("corn")
class CornHead(RankHead):
    """CORN (Shi, Cao & Raschka, Pattern Analysis and Applications 2023): conditional ordinal training.

    l_k models the conditional P(y > a_k | y > a_{k-1}) = s(l_k) (independent weights); P(y > a_k) =
    prod_{i<=k} s(l_i), rank-consistent by construction. Task k trains only on the images with j* > k-1
    (all images for k = 0): loss = sum_k sum_{i in S_k} BCE(l_k, [j*_i > k]) / sum_k |S_k|.
    The posterior is P(j) = P(y > a_{j-1}) - P(y > a_j).
    """

    def __init__(
        self,
        num_features: int,
        age_range: Sequence[float] | None,
        hidden: int = 256,
        dropout: float = 0.0,
        decode: str = "threshold",
        bias_init: str = "prior",
        weight_init: str = "shared",
        lr_scale: float = LR_SCALE,
    ) -> None:
        super().__init__(num_features, age_range, hidden, dropout, decode, bias_init, lr_scale)
        self.mlp = self.make_mlp(nn.Linear(self.width, self.num_classes - 1))
        self._init_output(weight_init)

    def prior_bias(self, prior: torch.Tensor) -> torch.Tensor:
        """The conditional tasks' log-odds: logit P(j > k | j > k-1) = logit(S_k / S_{k-1}), S_{-1} = 1."""
        above = survival(prior).double()
        previous = torch.cat([above.new_ones(1), above[:-1]])
        return (above / previous).clamp(1e-12, 1 - 1e-12).logit().float()

    def rank_probabilities(self, raw: torch.Tensor) -> torch.Tensor:
        return raw.sigmoid().cumprod(-1)

    def posterior(self, raw: torch.Tensor) -> torch.Tensor:
        above = self.rank_probabilities(raw)
        ones, zeros = torch.ones_like(above[:, :1]), torch.zeros_like(above[:, :1])
        return torch.cat([ones, above], -1) - torch.cat([above, zeros], -1)

    def loss(self, raw: torch.Tensor, ages: torch.Tensor) -> torch.Tensor:
        index = self.class_index(ages).unsqueeze(-1)
        tasks = torch.arange(self.num_classes - 1, device=raw.device)
        included = (index > tasks - 1).float()  # S_k: images still "above" the previous threshold
        labels = (index > tasks).float()
        bce = F.binary_cross_entropy_with_logits(raw, labels, reduction="none")
        return (bce * included).sum() / included.sum()
