"""The built-in prior policy: what `--strategy auto` runs for a model nobody has calibrated.

A calibrated policy (`ttc calibrate`) learns, for one model pair, the difficulty thresholds and the best
strategy per level and budget. Without one, `auto` still follows the paper's rule (Snell et al. 2024,
section 5): spend little on easy problems and all of the budget, on the strongest verifier-guided strategy
there is, on hard ones. What the first wave of samples already tells is the only difficulty signal that
needs no calibration: their answer agreement (a mean PRM score or a trace confidence has a scale of its
own for every model, so thresholds on it would be guesses). With the estimation samples (4):

    all agree          level 1   with a PRM: weighted best-of-N (the paper's pick for easy problems); without
                                 one: stop, the wave's majority answer (the rest of the budget is not spent)
    3 of 4 agree       level 2   weighted best-of-N (PRM-weighted, or confidence-weighted without a PRM)
    2 of 4 or fewer    3 to 5    with a PRM: particle filtering, the strongest PRM search ttc has (it beat
                                 beam search and best-of-N at most cells of the built-in pair's calibrated
                                 table); without one: confidence-weighted voting (DeepConf offline)

Budgets below 4 are spent on sampling (a search needs room to branch). The table has the shape of a
calibrated one (`table.Policy`), so `auto` runs it the same way; `source` says it is the prior.

Why a PRM-weighted vote and not a stop where all 4 agree: on 200 problems apart from the shipped 500 and the
calibration set (`python -m ttc.arith --n 200 --seed 13`), the 62 whose 4 samples agreed were right 53
times when auto stopped there and 58 times with weighted best-of-N at budget 16: agreeing samples are
wrong often enough for a verifier to be worth its cost.
"""

from __future__ import annotations

from .table import LEVELS, Choice, Policy

SAMPLES = 4  # estimation samples: agreement among 4 separates 1.0 / 0.75 / 0.5 / 0.25
BUDGETS = (1, 2, 4, 8, 16, 32, 64)  # table budgets; a budget between two uses the lower one's row
SOURCE = "the built-in prior (uncalibrated)"
# agreement >= 1.0: level 1; >= 0.75: 2; >= 0.5: 3; >= 0.3: 4 (more samples than 4); below: 5
THRESHOLDS = [1.0, 0.75, 0.5, 0.3]


def prior_policy(with_prm: bool, confidence_vote: str = "deepconf") -> Policy:
    """The prior table: PRM search on hard problems with a PRM, `confidence_vote` (a registered strategy
    that weights votes by trace confidence) without one."""
    weighted = Choice("weighted-best-of-n") if with_prm else Choice(confidence_vote)
    hard = Choice("particle-filter") if with_prm else Choice(confidence_vote)
    table: dict[int, dict[int, Choice]] = {}
    for level in LEVELS:
        row: dict[int, Choice] = {}
        for b in BUDGETS:
            if level == 1 and not with_prm:
                row[b] = Choice("majority", spend=min(SAMPLES, b))  # stop after the estimation wave
            elif b < SAMPLES:
                row[b] = Choice("majority")
            else:
                row[b] = weighted if level <= 2 else hard
        table[level] = row
    return Policy(
        model="",
        prm=None,
        samples=SAMPLES,
        thresholds=list(THRESHOLDS),
        table=table,
        source=SOURCE,
        estimator="agreement",
    )
