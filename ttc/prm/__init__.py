"""Process reward models (`reward`) and the aggregation of per-step scores (`aggregate`)."""

from .aggregate import AGGREGATIONS, get_aggregation
from .reward import MathShepherdPRM, RewardModel, SelfJudgePRM, StepScorer, two_way

__all__ = ["AGGREGATIONS", "MathShepherdPRM", "RewardModel", "SelfJudgePRM", "StepScorer", "get_aggregation", "two_way"]
