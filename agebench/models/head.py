"""The age head shared by every backbone, so that backbones are compared with the same regressor."""

from __future__ import annotations

import torch
from torch import nn


class RegressionHead(nn.Module):
    """``in_features -> hidden -> 1`` MLP (ReLU, optional dropout); ``hidden=0`` gives a linear head.

    The two-layer 256-wide default is the head of Maroun et al. 2025 (768 -> 256 -> 1 on the hybrid).
    """

    def __init__(self, in_features: int, hidden: int = 256, dropout: float = 0.0) -> None:
        super().__init__()
        if hidden < 0:
            raise ValueError(f"hidden must be >= 0, got {hidden}")
        self.in_features = in_features
        self.hidden = hidden
        if hidden == 0:
            self.mlp = nn.Sequential(nn.Dropout(dropout), nn.Linear(in_features, 1))
        else:
            self.mlp = nn.Sequential(
                nn.Linear(in_features, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, 1)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Features ``[B, in_features]`` -> one raw output per image, ``[B, 1]``."""
        return self.mlp(x)
