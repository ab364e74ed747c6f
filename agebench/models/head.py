"""Kept for imports written before heads had a registry: the regression head lives in agebench.models.heads."""

from agebench.models.heads.regression import RegressionHead

__all__ = ["RegressionHead"]
