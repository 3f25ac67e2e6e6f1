"""Process reward models: the interface and the Math-Shepherd format (`reward`), the RLHFlow chat format
(`rlhflow`), the policy judging its own steps (`selfjudge`), reward heads on hidden states (`heads`) or served
by vLLM's pooling API (`pooled`), and the aggregation of per-step scores (`aggregate`)."""

from .aggregate import AGGREGATIONS, get_aggregation
from .reward import MathShepherdPRM, RewardModel, StepScorer, two_way
from .rlhflow import RLHFlowPRM
from .selfjudge import SelfJudgePRM

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
