"""The compute-optimal policy: which strategy to run at each difficulty level and budget.

    table       the policy table: load and validate its YAML, map a difficulty estimate to a level, plan a
                budget (what `--strategy auto` runs)
    difficulty  `ttc difficulty`: estimate a problem's level from a few scored samples; check the levels
                against true pass rates on a labeled dataset
    calibrate   `ttc calibrate`: run candidate strategies over a labeled dataset and write a policy table

Only the table is imported here: difficulty and calibrate run benches, so they are imported by their own
paths (`ttc.policy.calibrate`), which keeps the solver's import of the table free of the bench layer.
"""

from .table import ESTIMATORS, KEYS, LEVELS, Choice, Policy, dump_policy, estimate_value, load_policy

__all__ = ["ESTIMATORS", "KEYS", "LEVELS", "Choice", "Policy", "dump_policy", "estimate_value", "load_policy"]
