"""The final measurements of the built-in pair on the shipped 500 problems (`ttc/data/arith500.jsonl`).

greedy            accuracy by operators, with torch and with llama.cpp on the exported GGUF
pass@16           at T=0.8 (torch sampling)
revision          on problems whose greedy attempt is wrong: a revision conditioned on that attempt
                  (greedy, and sampled at T=0.8) against a fresh sample at T=0.8
PRM               step-level AUROC over the 16 samples per problem; best-of-16 by the last step's
                  PRM score against majority vote over the same 16
"""

from __future__ import annotations

import json
from pathlib import Path

from ..arith import read_dataset, split_steps
from .evaluate import by_ops, format_table, is_correct, majority, solve
from .formats import VOCAB, policy_prompt
from .prm import auroc, prm_step_scores, step_labels


def llama_cpp_greedy(gguf_path: str | Path, problems: list[str], threads: int = 2) -> list[str]:
    """Greedy solutions from the GGUF through llama_cpp.Llama.create_completion (temperature 0)."""
    import llama_cpp

    from ...engine.llama.buffers import plain_cpu_buffers

    with plain_cpu_buffers(llama_cpp):  # as the engine loads it
        llm = llama_cpp.Llama(str(gguf_path), n_ctx=512, n_threads=threads, n_batch=512, verbose=False)
    out = []
    for p in problems:
        r = llm.create_completion(policy_prompt(p), max_tokens=160, temperature=0.0, top_k=1)
        out.append(r["choices"][0]["text"])
    return out


def full_report(
    policy, prm=None, policy_gguf: str | Path | None = None, n_samples: int = 16, seed: int = 1234, log=print
) -> dict:
    """Every number of the issue's acceptance list, as a dict (and tables through `log`)."""
    records = read_dataset()
    problems = [r["problem"] for r in records]
    rep: dict = {"problems": len(problems)}
    greedy = [t[0] for t in solve(policy, problems, 0.0, 1, seed)]
    g_ok = [float(is_correct(p, t)) for p, t in zip(problems, greedy)]
    rep["greedy_torch"] = by_ops(problems, g_ok)
    rows = {"greedy (torch)": rep["greedy_torch"]}
    if policy_gguf is not None:
        lc = llama_cpp_greedy(policy_gguf, problems)
        rep["greedy_llama_cpp"] = by_ops(problems, [float(is_correct(p, t)) for p, t in zip(problems, lc)])
        rep["greedy_llama_cpp_same_text"] = sum(a == b for a, b in zip(lc, greedy)) / len(problems)
        rows["greedy (llama.cpp)"] = rep["greedy_llama_cpp"]
    samples = solve(policy, problems, 0.8, n_samples, seed + 1)
    ok = [[is_correct(p, t) for t in ts] for p, ts in zip(problems, samples)]
    rep["sample_t08"] = by_ops(problems, [sum(o) / len(o) for o in ok])
    rep[f"pass@{n_samples}"] = by_ops(problems, [float(any(o)) for o in ok])
    rep[f"majority@{n_samples}"] = by_ops(problems, [float(majority(p, ts)) for p, ts in zip(problems, samples)])
    rows["one sample T=0.8"] = rep["sample_t08"]
    rows[f"pass@{n_samples} T=0.8"] = rep[f"pass@{n_samples}"]
    rows[f"majority@{n_samples}"] = rep[f"majority@{n_samples}"]
    # revision on the problems whose greedy attempt is wrong
    wrong = [i for i, o in enumerate(g_ok) if not o]
    wp = [problems[i] for i in wrong]
    attempts = [[greedy[i]] for i in wrong]
    rev_g = solve(policy, wp, 0.0, 1, seed + 2, attempts=attempts)
    rev_s = solve(policy, wp, 0.8, n_samples, seed + 3, attempts=attempts)
    fresh = [sum(ok[i]) / len(ok[i]) for i in wrong]
    rep["revision"] = {
        "problems_greedy_wrong": len(wrong),
        "fresh_sample_t08": sum(fresh) / max(1, len(fresh)),
        "revision_greedy": sum(is_correct(p, t[0]) for p, t in zip(wp, rev_g)) / max(1, len(wp)),
        "revision_sample_t08": sum(sum(is_correct(p, x) for x in t) / len(t) for p, t in zip(wp, rev_s))
        / max(1, len(wp)),
    }
    log(format_table(rows))
    r = rep["revision"]
    log(
        f"revision, on the {r['problems_greedy_wrong']} problems whose greedy attempt is wrong: fresh sample "
        f"T=0.8 {r['fresh_sample_t08']:.3f}, revision greedy {r['revision_greedy']:.3f}, revision sample "
        f"T=0.8 {r['revision_sample_t08']:.3f}"
    )
    if prm is not None:
        flat_p, flat_s = [], []
        for p, ts in zip(problems, samples):
            for t in ts:
                flat_p.append(p)
                flat_s.append(split_steps(t)[:12] or [t])
        scores = prm_step_scores(prm, flat_p, flat_s)
        labels = step_labels(list(zip(flat_p, flat_s)))
        rep["prm_step_auroc"] = auroc([x for r in scores for x in r], [x for r in labels for x in r])
        best = []
        for i in range(len(problems)):
            rows_i = range(i * n_samples, (i + 1) * n_samples)
            last = [scores[j][-1] if scores[j] else 0.0 for j in rows_i]
            pick = max(range(n_samples), key=lambda k: last[k])
            best.append(float(ok[i][pick]))
        rep[f"prm_best_of_{n_samples}"] = by_ops(problems, best)
        log(
            format_table(
                {
                    f"majority@{n_samples}": rep[f"majority@{n_samples}"],
                    f"PRM best-of-{n_samples} (last)": rep[f"prm_best_of_{n_samples}"],
                }
            )
        )
        log(f"PRM step-level AUROC on {len(flat_s)} policy samples: {rep['prm_step_auroc']:.4f}")
    return rep


def save_report(rep: dict, path: str | Path) -> None:
    Path(path).write_text(json.dumps(rep, indent=1, default=str))


__all__ = ["full_report", "save_report", "llama_cpp_greedy", "VOCAB"]
