"""Process reward models: the interface and the Math-Shepherd and self-judge formats (`reward`), the RLHFlow
chat format (`rlhflow`), and the aggregation of per-step scores (`aggregate`)."""

from .aggregate import AGGREGATIONS, get_aggregation
from .reward import MathShepherdPRM, RewardModel, SelfJudgePRM, StepScorer, two_way
from .rlhflow import RLHFlowPRM

__all__ = [
    "AGGREGATIONS",
    "MathShepherdPRM",
    "RLHFlowPRM",
    "RewardModel",
    "SelfJudgePRM",
    "StepScorer",
    "get_aggregation",
    "two_way",
]
