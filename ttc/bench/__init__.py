"""`ttc bench`: run a dataset under strategies x budgets, with live progress, a resumable result store,
summaries by budget and difficulty, and an accuracy-vs-budget plot.

    datasets   JSONL readers (MATH-500, GSM8K, the built-in arith format, or any keys)
    store      DIR/samples.jsonl and DIR/config.json: whole lines only, resumable, refuses mixed configs
    run        the loop (scaling curves from one run for strategies with `subset`)
    summary    DIR/summary.json, DIR/summary.csv and the tables on stderr
    progress   live progress on stderr
    plot       DIR/accuracy_vs_budget.png (matplotlib, the `plot` extra)
"""

from .run import BenchOptions, parse_budgets, parse_strategies, run_bench

__all__ = ["BenchOptions", "parse_budgets", "parse_strategies", "run_bench"]
