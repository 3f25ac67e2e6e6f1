"""`ttc solve - --total-budget T` (or `--total-tokens T`): one total for the problems on stdin, answered one at a
time, in order, each before the next is looked at.

The allocator here cannot see the problems to come, only how many lines there are. Each problem draws the
policy's estimation samples, gets its level, and is planned its share of what is left as `allocate.plan_one`
plans it: the file plan for this problem beside the ones still to come, whose levels are assumed to follow the
mix seen so far (a running estimate), keeping back a reserve of the estimation samples of every problem to
come. A problem whose answer settles stops early and leaves the rest for the later ones. The last problem may
spend all that is left. The bench's `stream` cell runs the same code on a file in its order, so what this
costs against seeing the whole file is measured there.
"""

from __future__ import annotations

import dataclasses
import json

from ..engine.base import shift_seed
from ..policy.allocate import Budget, Problem, max_per_problem
from ..record import Result, Spent
from ..strategies import SolveContext
from ..strategies.base import Meter
from ..strategies.sampling import sample_candidates, score_candidates, select_weighted
from .total import allocator_for


def solve_total(solver, texts: list[str], total: int, unit: str, seed: int, sampling, json_out: bool, say) -> Budget:
    """Answer every non-empty line of `texts` (an empty line gets an empty answer line) within `total`."""
    params = sampling.apply(solver.preset)
    alloc = allocator_for(solver)
    idx = [i for i, t in enumerate(texts) if t.strip()]
    budget = Budget(total, unit, params.max_tokens)
    cap = max_per_problem(budget.samples_left(), len(idx))
    ps: list[Problem] = []
    spent: dict[int, Spent] = {}

    def draw(i: int, start: int, k: int):
        s = shift_seed(seed, start)
        ctx = SolveContext(
            problem=texts[idx[i]].strip(), preset=solver.preset, policy=solver.policy, budget=k, seed=s,
            sampling=dataclasses.replace(params, seed=s), prm=solver.prm,
        )  # fmt: skip
        meter = Meter(ctx)
        cands = sample_candidates(ctx, k)
        score_candidates(ctx, cands)
        got = meter.spent(k)
        acc = spent.setdefault(i, Spent())
        for f in dataclasses.fields(Spent):
            setattr(acc, f.name, getattr(acc, f.name) + getattr(got, f.name))
        return cands

    j = 0
    for line, text in enumerate(texts):
        if not text.strip():
            print("", flush=True)
            continue
        ps.append(Problem())
        alloc.solve_one(ps, j, len(idx), draw, budget, cap)
        p = ps[j]
        answer, details = select_weighted(p.cands) if p.cands else (None, {})
        details["allocation"] = {**p.record(), "mode": "stream", "total": total, "unit": unit, "problems": len(idx),
                                 "spent_so_far": budget.spent}  # fmt: skip
        s = spent.get(j, Spent())
        s.generations = float(len(p.cands))
        if json_out:
            result = Result(
                answer=answer, strategy="stream", budget=total, problem=text.strip(), candidates=p.cands, spent=s,
                model=solver.policy.info.name, prm=solver.prm.engine.info.name, seed=seed, details=details,
            )  # fmt: skip
            print(json.dumps(result.to_dict(), ensure_ascii=False), flush=True)
        else:
            print("" if answer is None else answer.replace("\n", " "), flush=True)
        if answer is None:
            say(f"ttc: no answer for line {line + 1} ({len(p.cands)} samples; {p.stopped or 'none fitted'})")
        j += 1
    say(f"ttc: total {total} {unit}: spent {budget.spent} over {len(idx)} problems ({budget.samples} samples)")
    return budget
