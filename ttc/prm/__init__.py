"""Process reward models (`reward`) and the aggregation of per-step scores (`aggregate`)."""

from .aggregate import AGGREGATIONS, get_aggregation
from .reward import MathShepherdPRM, RewardModel, RLHFlowPRM, SelfJudgePRM, StepScorer, two_way

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
