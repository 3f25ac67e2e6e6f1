"""Test-time compute strategies, one module per family, registered by name (see `base.REGISTRY`)."""

from . import sampling  # noqa: F401  (registers greedy, majority)
from .base import REGISTRY, SolveContext, get_strategy

__all__ = ["REGISTRY", "SolveContext", "get_strategy"]
