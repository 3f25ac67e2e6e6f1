"""Compute-optimal policies: the table that `auto` consults, read from presets/policies/*.yaml.

A policy is made by `ttc calibrate` for one model pair. It holds the difficulty thresholds (on the mean
final PRM score of a few samples: the paper's model-predicted difficulty, binned by quantiles) and, for
each level (1 easiest .. 5 hardest) and budget, the strategy and options that did best there:

    model: tiny-arith-policy.gguf        # the policy file it was calibrated for
    prm: tiny-arith-prm.gguf
    samples: 4                           # difficulty-estimation samples; they count against the budget
    estimator: mean_score                # or agreement, or blend (their mean): what the thresholds bin
    thresholds: [0.93, 0.85, 0.7, 0.45]  # estimate >= thresholds[0]: level 1, ... below the last: level 5
    table:
      1: {4: {strategy: majority}, 16: {strategy: weighted-best-of-n}}
      5: {4: {strategy: beam, options: {width: 4}}, 16: ...}
    accuracy: {...}                      # what calibration measured (cross-validated), for the record

Reading a policy has no side effects. A policy made for another model is used with a warning naming both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import UsageError

LEVELS = (1, 2, 3, 4, 5)
KEYS = (  # a policy file's keys
    "model", "prm", "samples", "estimator", "thresholds", "table", "accuracy", "difficulty", "selection", "made_with",
)  # fmt: skip
# The difficulty statistics of k scored samples (higher: easier). The paper bins the mean final PRM score;
# the share of samples agreeing with the most common answer is the PRM-free alternative; blend is their mean.
ESTIMATORS = ("mean_score", "agreement", "blend")


def estimate_value(estimator: str, mean_score: float, agreement: float) -> float:
    if estimator == "mean_score":
        return mean_score
    if estimator == "agreement":
        return agreement
    if estimator == "blend":
        return (mean_score + agreement) / 2
    raise ValueError(f"unknown difficulty estimator {estimator!r}")


@dataclass
class Choice:
    strategy: str
    options: dict[str, Any] = field(default_factory=dict)
    spend: int | None = None  # spend only this much of the table budget (more did not help); None: all

    def budget_for(self, budget: int, table_budget: int) -> int:
        """What to spend of `budget` when this choice was made for `table_budget`: all of it, or the same
        share of it as `spend` is of the table budget."""
        if self.spend is None:
            return budget
        return max(1, min(budget, budget * self.spend // table_budget))


@dataclass
class Policy:
    model: str
    prm: str | None
    samples: int
    thresholds: list[float]  # descending: 4 boundaries between 5 levels
    table: dict[int, dict[int, Choice]]
    accuracy: dict = field(default_factory=dict)
    source: str = ""
    estimator: str = "mean_score"  # one of ESTIMATORS
    difficulty: dict = field(default_factory=dict)  # how well each estimator ranked the calibration problems
    selection: dict = field(default_factory=dict)  # per budget: the rule that filled the table, and why

    def value(self, mean_score: float, agreement: float) -> float:
        return estimate_value(self.estimator, mean_score, agreement)

    def level(self, value: float) -> int:
        """The level of an estimate (`value`: the policy's estimator statistic)."""
        for i, t in enumerate(self.thresholds):
            if value >= t:
                return i + 1
        return len(self.thresholds) + 1

    def plan(self, level: int, budget: int) -> tuple[Choice, int, int]:
        """What `auto` does at this level and budget: the choice, the table budget it was made for, and
        the generations spent in all (never fewer than the estimation samples, which are spent first)."""
        choice, at = self.choose(level, budget)
        return choice, at, max(min(self.samples, budget), choice.budget_for(budget, at))

    def choose(self, level: int, budget: int) -> tuple[Choice, int]:
        """The choice for this level at the largest calibrated budget not above `budget` (the smallest
        calibrated budget when `budget` is below all of them), and that budget."""
        row = self.table[level]
        fitting = [b for b in row if b <= budget]
        b = max(fitting) if fitting else min(row)
        return row[b], b


def load_policy(path: str | Path) -> Policy:
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"policy file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise UsageError(f"{path}: invalid YAML ({getattr(e, 'problem', e)})") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path}: a policy must be a YAML mapping")
    unknown = set(data) - set(KEYS)
    if unknown:
        raise UsageError(f"{path}: unknown key '{sorted(unknown)[0]}'")
    for key in ("model", "samples", "thresholds", "table"):
        if key not in data:
            raise UsageError(f"{path}: missing key '{key}'")
    th = data["thresholds"]
    if not (isinstance(th, list) and len(th) == len(LEVELS) - 1 and all(isinstance(x, (int, float)) for x in th)):
        raise UsageError(f"{path}: 'thresholds' must be a list of {len(LEVELS) - 1} numbers")
    if any(a < b for a, b in zip(th, th[1:])):
        raise UsageError(f"{path}: 'thresholds' must be in descending order (level 1 is the easiest)")
    estimator = data.get("estimator", "mean_score")
    if estimator not in ESTIMATORS:
        raise UsageError(f"{path}: 'estimator' must be one of {', '.join(ESTIMATORS)}, got {estimator!r}")
    samples = data["samples"]
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise UsageError(f"{path}: 'samples' must be a positive integer")
    from ..strategies import REGISTRY as registry

    table: dict[int, dict[int, Choice]] = {}
    raw = data["table"] or {}
    budgets_seen: set[int] | None = None
    for level in LEVELS:
        row = raw.get(level, raw.get(str(level)))
        if not isinstance(row, dict) or not row:
            raise UsageError(f"{path}: table is missing level {level}")
        parsed = {}
        for b, c in row.items():
            try:
                budget = int(b)
            except (TypeError, ValueError):
                raise UsageError(f"{path}: table level {level}: budget '{b}' is not an integer") from None
            if not isinstance(c, dict) or "strategy" not in c:
                raise UsageError(f"{path}: table level {level} budget {budget}: needs a 'strategy'")
            name = str(c["strategy"])
            if name not in registry or name == "auto":
                raise UsageError(
                    f"{path}: table level {level} budget {budget}: '{name}' is not a strategy auto can run"
                )
            spend = c.get("spend")
            if spend is not None and (isinstance(spend, bool) or not isinstance(spend, int) or not 0 < spend <= budget):
                raise UsageError(
                    f"{path}: table level {level} budget {budget}: 'spend' must be an integer from 1 to {budget}"
                )
            parsed[budget] = Choice(name, dict(c.get("options") or {}), spend)
        if budgets_seen is not None and set(parsed) != budgets_seen:
            missing = sorted(budgets_seen ^ set(parsed))[0]
            raise UsageError(f"{path}: table level {level} lacks budget {missing} that other levels have")
        budgets_seen = set(parsed)
        table[level] = parsed
    return Policy(
        model=str(data["model"]),
        prm=data.get("prm"),
        samples=samples,
        thresholds=[float(x) for x in th],
        table=table,
        accuracy=data.get("accuracy") or {},
        source=str(path),
        estimator=estimator,
        difficulty=data.get("difficulty") or {},
        selection=data.get("selection") or {},
    )


def _choice_data(c: Choice) -> dict:
    out: dict[str, Any] = {"strategy": c.strategy}
    if c.options:
        out["options"] = c.options
    if c.spend is not None:
        out["spend"] = c.spend
    return out


def dump_policy(policy: Policy, path: str | Path, made_with: dict | None = None) -> None:
    data = {
        "model": policy.model,
        "prm": policy.prm,
        "samples": policy.samples,
        "estimator": policy.estimator,
        "thresholds": [round(t, 6) for t in policy.thresholds],
        "table": {
            lvl: {b: _choice_data(c) for b, c in sorted(row.items())} for lvl, row in sorted(policy.table.items())
        },
        "accuracy": policy.accuracy,
    }
    if policy.difficulty:
        data["difficulty"] = policy.difficulty
    if policy.selection:
        data["selection"] = policy.selection
    if made_with:
        data["made_with"] = made_with
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
