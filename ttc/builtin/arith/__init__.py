"""The built-in task `arith`: sums of 2 to 9 integers from 1 to 99 joined by `+` and `-`.

It feeds the built-in model pair (`ttc.train`), the tests and the shipped sample dataset
`ttc/data/arith500.jsonl`:

    problem     "37+48-19"                       (whitespace in a problem is ignored)
    solution    "37+48=85\\n85-19=66\\n\\boxed{66}" (one step per line with the running total, then the answer)

`evaluate` computes the answer by parsing (never `eval`), `solution_steps` writes the correct steps and
`check_steps` says exactly which steps of a solution are right.
"""

from .dataset import (
    HELDOUT_PATH,
    heldout_problems,
    read_dataset,
    sample_dataset_records,
    write_sample_dataset,
)
from .problems import (
    MAX_OPS,
    MAX_VALUE,
    MIN_OPS,
    MIN_VALUE,
    apply_op,
    canonical,
    count_ops,
    evaluate,
    generate_problems,
    iter_problems,
    parse_problem,
    random_problem,
)
from .steps import (
    answer_step,
    check_solution,
    check_steps,
    parse_boxed,
    prefix_good,
    solution_steps,
    solution_text,
    split_steps,
)

__all__ = [
    "HELDOUT_PATH",
    "MAX_OPS",
    "MAX_VALUE",
    "MIN_OPS",
    "MIN_VALUE",
    "apply_op",
    "answer_step",
    "canonical",
    "check_solution",
    "check_steps",
    "count_ops",
    "evaluate",
    "generate_problems",
    "heldout_problems",
    "iter_problems",
    "parse_boxed",
    "parse_problem",
    "prefix_good",
    "random_problem",
    "read_dataset",
    "sample_dataset_records",
    "solution_steps",
    "solution_text",
    "split_steps",
    "write_sample_dataset",
]
