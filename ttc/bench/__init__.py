"""`ttc bench`: run a dataset under strategies x budgets, with live progress, a resumable result store,
summaries by budget and difficulty with 95% intervals, paired comparisons of two cells, and a plot.

    datasets   JSONL readers (MATH-500, GSM8K, the built-in arith format, or any keys)
    store      DIR/samples.jsonl and DIR/config.json: whole lines only, resumable, refuses mixed configs
    run        the loop (scaling curves from one run for strategies with `subset`)
    summary    DIR/summary.json, DIR/summary.csv and the tables on stderr
    stats      Wilson intervals; paired differences (Newcombe's interval, McNemar's exact p)
    paired     --paired A@N,B@M: two cells compared on the same problems
    report     the end of a run (summaries, tables, comparisons, plot), and `ttc bench DIR` on a run folder
    progress   live progress on stderr
    plot       DIR/accuracy_vs_budget.png: by budget, by tokens generated, by difficulty (the `plot` extra)
"""

from .run import BenchOptions, parse_budgets, parse_strategies, run_bench

__all__ = ["BenchOptions", "parse_budgets", "parse_strategies", "run_bench"]
