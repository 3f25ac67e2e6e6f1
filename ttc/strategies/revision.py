"""Sequential revisions: chains in which each new attempt sees the earlier ones (up to the preset's
`revision.max_attempts`), as in the revision model of Snell et al. The layout is the preset's `revision`
section, or the default one (presets.RevisionConfig: the earlier attempts, then the problem's own prompt).

The budget N is split into `chains` parallel chains of `sequential` attempts each (option `sequential`,
default 4, or `chains`); N = chains x sequential. Every round advances all chains in one batch: the
revision prompts share the problem's prefix (evaluated once), and each chain's earlier attempts are fed
to its own branch. The answer is chosen over every attempt of every chain by weighted PRM vote when a
reward model is configured, else by majority (option `select`: weighted | best | majority).
"""

from __future__ import annotations

import dataclasses

from ..errors import UsageError
from ..presets import RevisionConfig
from ..prompts import fill, render_chat
from ..record import Candidate, Result
from .base import Meter, SolveContext, candidate, make_result, strategy
from .sampling import score_candidates, select_best, select_majority, select_weighted

SELECTORS = {"weighted": select_weighted, "best": select_best, "majority": select_majority}
MARK = "<<ttc-attempts>>"  # where the attempts go in a rendered revision prompt


def split(ctx: SolveContext) -> tuple[int, int]:
    """(chains, sequential) for the budget."""
    n = ctx.budget
    if "chains" in ctx.options:
        chains = max(1, min(n, int(ctx.options["chains"])))
        return chains, max(1, n // chains)
    seq = max(1, min(n, int(ctx.options.get("sequential", 4))))
    return max(1, n // seq), seq


@strategy(
    "revise",
    "chains of sequential revisions, each attempt conditioned on the earlier ones",
    uses_prm=True,
    stepwise=True,
)
def revise(ctx: SolveContext) -> Result:
    cfg = ctx.preset.revision or RevisionConfig()
    prefix, tail, chat = layout(ctx, cfg)
    meter = Meter(ctx)
    chains, seq = split(ctx)
    if chains * seq != ctx.budget:
        ctx.warn(f"budget {ctx.budget} split as {chains} chains x {seq} attempts = {chains * seq}")
    history: list[list[Candidate]] = [[] for _ in range(chains)]
    for round_ in range(seq):
        params = dataclasses.replace(ctx.sampling, seed=ctx.seed * 1_000_003 + round_)
        if round_ == 0:  # first attempts: plain samples of the problem's own prompt
            comps = ctx.policy.sample(ctx.prompt(), chains, params)
        else:
            if chat:  # the attempts are plain text; the rest of the chat holds markup (special tokens)
                end = ctx.policy.tokenize(tail, add_bos=False, special=True)
                rests = [ctx.policy.tokenize(_attempts(cfg, h), add_bos=False, special=False) + end for h in history]
                lengths = [len(r) for r in rests]
            else:
                rests = [_attempts(cfg, h) + tail for h in history]
                lengths = [len(ctx.policy.tokenize(r, add_bos=False)) for r in rests]
            longest = max(lengths)
            with ctx.policy.branches(
                prefix, max_live=chains, max_tokens=longest + params.max_tokens, feed_tokens=sum(lengths)
            ) as bs:
                ids = bs.fork(0, chains)
                bs.drop([0])
                bs.feed(ids, rests, [[] for _ in ids], [])
                comps = bs.extend(ids, dataclasses.replace(params, stop=ctx.sampling.stop, include_stop=False))
        for h, c in zip(history, comps):
            h.append(candidate(ctx, c))
    cands = [c for h in history for c in h]
    choice = str(ctx.options.get("select", "weighted" if ctx.prm is not None else "majority"))
    if choice not in SELECTORS:
        raise UsageError(f"unknown selection '{choice}' (known: {', '.join(SELECTORS)})")
    if choice != "majority":
        if ctx.prm is None:
            raise UsageError(
                f"select={choice} needs a reward model: configure prm in the preset or use select=majority"
            )
        score_candidates(ctx, cands)
    answer, details = SELECTORS[choice](cands)
    details.update(
        {"chains": chains, "sequential": seq, "select": choice, "final_answers": [h[-1].answer for h in history]}
    )
    return make_result(ctx, "revise", meter, cands, answer, generations=len(cands), details=details)


def layout(ctx: SolveContext, cfg: RevisionConfig) -> tuple[str, str, bool]:
    """(head, tail, chat): a revision's prompt is head + the attempts + tail. The head is the same for every
    chain (evaluated once); with a chat prompt the template is the user message, rendered with the preset's
    system message by the model's chat template, and the tail then holds chat markup."""
    where = ctx.preset.source or ctx.preset.name
    if cfg.template.count("{attempts}") != 1:
        raise UsageError(f"{where}: revision.template must contain {{attempts}} once, got {cfg.template!r}")
    own = fill(ctx.preset.prompt.template, problem=ctx.problem)
    head, tail = (fill(t, prompt=own, problem=ctx.problem) for t in cfg.template.split("{attempts}"))
    if ctx.preset.prompt.format != "chat":
        return head, tail, False
    messages = [{"role": "system", "content": ctx.preset.prompt.system}] if ctx.preset.prompt.system else []
    parts = render_chat(ctx.policy, [*messages, {"role": "user", "content": head + MARK + tail}]).split(MARK)
    if len(parts) != 2:
        raise UsageError(f"{where}: {ctx.policy.info.name}'s chat template does not keep the revision message verbatim")
    return parts[0], parts[1], True


def _attempts(cfg, attempts: list[Candidate]) -> str:
    kept = attempts[-cfg.max_attempts :]
    return "".join(fill(cfg.attempt_template, attempt=a.text, index=str(i + 1)) for i, a in enumerate(kept))
