"""Prediction heads: how features become an age. A registry of ten methods plus third-party entry points.

Built-ins, in listing order: ``regression`` (the default), ``classification`` (DEX), ``mean_variance``,
``dldl``, ``dldl_v2``, ``sord``, ``orcnn``, ``coral``, ``corn`` and ``unimodal``. The contract is in
:mod:`agebench.models.heads.registry`; the shared trunk and age range in :mod:`agebench.models.heads.base`.
"""

from agebench.models.heads.base import AgeHead, AgeRange, age_range_of, check_age_range, count_outside
from agebench.models.heads.registry import (
    DEFAULT_HEAD,
    ENTRY_POINT_GROUP,
    HeadSpec,
    check_head,
    create_head,
    describe_head,
    describe_heads,
    get_head_spec,
    head_context,
    list_heads,
    register_head,
    resolve_head_kwargs,
    validate_head,
)
from agebench.models.heads.regression import RegressionHead

__all__ = [
    "DEFAULT_HEAD",
    "ENTRY_POINT_GROUP",
    "AgeHead",
    "AgeRange",
    "HeadSpec",
    "RegressionHead",
    "age_range_of",
    "check_age_range",
    "check_head",
    "count_outside",
    "create_head",
    "describe_head",
    "describe_heads",
    "get_head_spec",
    "head_context",
    "list_heads",
    "register_head",
    "resolve_head_kwargs",
    "validate_head",
]
