"""Test-time compute strategies, one module per family, registered by name (see `base.REGISTRY`)."""

from . import adaptive, confidence, revision, sampling, search  # noqa: F401  (each registers its strategies)
from .base import REGISTRY, SolveContext, get_strategy

__all__ = ["REGISTRY", "SolveContext", "get_strategy"]
