"""Write an arith dataset: `python -m ttc.arith --n 300 --seed 11 --out cal.jsonl`.

Problems are balanced over 1..8 operators, drawn with the seed, and (unless --include-heldout) none is one
of the shipped 500 of `ttc/data/arith500.jsonl`, so a dataset made here can calibrate a policy that is
then measured on the shipped problems.
"""

from __future__ import annotations

import argparse
import sys

from .dataset import heldout_problems, write_sample_dataset


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ttc.arith", description=__doc__)
    ap.add_argument("--n", type=int, required=True, help="number of problems")
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--out", required=True, help="JSONL file to write")
    ap.add_argument("--prefix", default=None, help="id prefix (default: arith-sSEED)")
    ap.add_argument("--include-heldout", action="store_true", help="allow problems of the shipped 500")
    args = ap.parse_args(argv)
    if args.n < 1:
        ap.error(f"--n must be at least 1, got {args.n}")
    exclude = None if args.include_heldout else heldout_problems()
    path = write_sample_dataset(args.out, args.n, args.seed, exclude, args.prefix or f"arith-s{args.seed}")
    print(f"wrote {args.n} problems to {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
