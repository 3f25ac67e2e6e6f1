"""Thinking budgets on an OpenAI-compatible server, enforced by ttc: the completions API continues text and has
no per-trace budget of its own (llama-cpp-python's server has none; llama-server's --reasoning-budget is a
server-wide flag, one sequence per request), so each trace runs in phases, all traces concurrently:

    think    prompt -> at most `budget` thinking tokens (plus the start marker where the model opens the block),
             stopped at the end marker's text
    resume   (--think-min) an end before the minimum: the text so far + the continuation word, thinking on
    answer   the text so far + the end marker (natural end) or + the budget message and end marker (budget
             reached), continued with the run's stop strings and the tokens left of max_tokens

The server's prefix cache makes each later phase cost only its new tokens. Thinking tokens are counted with
the server's tokenizer on the thinking text, so a count matches the in-process engine's whenever the server
detokenizes and tokenizes the block's text back to the same tokens (the markers and the filler of a normal
trace do). A trace whose thinking ends the generation, or that uses up max_tokens inside its block, has no
answer. Token statistics (deepconf, self-certainty) need one streamed request per trace, which these phases
are not: that combination is refused in one line.
"""

from __future__ import annotations

import dataclasses

from ...errors import UsageError
from ..base import Completion, SamplingParams, ThinkTrace, Usage, derive_seed

PHASE_SEED = 7_907  # the answer phase of trace i samples with derive_seed(seed + PHASE_SEED * k, i)


def sample_thinking(engine, prompt: str, n: int, params: SamplingParams) -> list[Completion]:
    """n traces of `prompt`, each under params.thinking (see the module docstring)."""
    if params.stats_top_k > 0:
        raise UsageError(
            f"{engine.info.name}: token statistics over a thinking model's traces need the in-process engine "
            "(--backend llama); on a server use majority, best-of-n or weighted-best-of-n"
        )
    acct = engine.usage
    return engine._map(lambda i: _trace(engine, prompt, params, i, acct), list(range(n)))


def _trace(engine, prompt: str, params: SamplingParams, index: int, acct: Usage) -> Completion:
    ctl = params.thinking
    plain = dataclasses.replace(params, thinking=None, stats_top_k=0, include_stop=False)
    left = params.max_tokens
    text = ""  # what the model and ttc wrote after the prompt
    think_from = 0 if ctl.opened else None  # where the thinking text begins in `text`
    generated = forced = continuations = 0
    cut = False
    phase = 0

    def run(max_tokens: int, stop: tuple[str, ...]) -> Completion:
        nonlocal phase, generated, left
        seed = derive_seed(params.seed + PHASE_SEED * phase, index)
        phase += 1
        p = dataclasses.replace(plain, max_tokens=max(1, max_tokens), stop=stop)
        c = engine._generate(prompt + text, p, 1, seed, acct)[0]
        generated += c.n_generated
        left -= c.n_generated
        return c

    def thinking_tokens() -> int:
        body = text[think_from:] if think_from is not None else ""
        return len(engine.tokenize(body, add_bos=False, special=True)) if body else 0

    while True:  # the thinking phases
        used = thinking_tokens()
        opening = 0 if think_from is not None else len(ctl.start)  # the start marker the model writes first
        room = left if ctl.budget is None else min(left, ctl.budget - used + opening)
        c = run(room, (ctl.end_text,))
        before = len(text)
        text += c.text
        if think_from is None:
            at = text.find(ctl.start_text, before) if ctl.start_text else -1
            if at < 0:  # the model never opened the block: all it wrote is its answer
                return _done(c, text, generated, None, None, 0, forced, False, continuations, text)
            think_from = at + len(ctl.start_text)
        used = thinking_tokens()
        if c.finish_reason == "eos" or (c.finish_reason == "length" and left <= 0):
            return _done(c, text, generated, think_from, None, used, forced, False, continuations, None)
        if c.finish_reason == "stop":  # the end marker
            if used < ctl.min_tokens and ctl.resume_text:
                if ctl.budget is None or used + len(ctl.resume) < ctl.budget:
                    text += ctl.resume_text
                    continuations += 1
                    forced += len(ctl.resume)
                    continue
                cut, think_to = True, len(text)  # the continuation word would pass the budget: the cut instead
                text += ctl.cut_text
                forced += len(ctl.cut)
                break
            think_to = len(text)
            text += ctl.end_text
            forced += len(ctl.end) - 1  # the model wrote the marker's first token (the server cut it)
            break
        cut = True  # the budget: the message and the end marker
        think_to = len(text)
        text += ctl.cut_text
        forced += len(ctl.cut)
        break
    if left <= 0:
        return _done(c, text, generated, think_from, None, used, forced, cut, continuations, None, think_to)
    answer_from = len(text)
    a = run(left, tuple(params.stop))
    text += a.text
    if a.stop is not None and params.include_stop:
        text += a.stop
    return _done(a, text, generated, think_from, answer_from, used, forced, cut, continuations, text[answer_from:],
                 think_to)  # fmt: skip


def _done(
    last: Completion, text: str, generated: int, think_from: int | None, answer_from: int | None, n_thinking: int,
    n_forced: int, cut: bool, continuations: int, answer: str | None, think_to: int | None = None,
) -> Completion:  # fmt: skip
    thinking = "" if think_from is None else text[think_from : len(text) if think_to is None else think_to]
    trace = ThinkTrace(
        thinking=thinking, answer=answer, n_thinking=n_thinking, n_answer=0, n_forced=n_forced, cut=cut,
        continuations=continuations, opened=think_from is not None,
    )  # fmt: skip
    if answer_from is not None or (think_from is None and answer is not None):
        trace.n_answer = last.n_generated
    return Completion(
        text=text, tokens=[], finish_reason=last.finish_reason, stop=last.stop, n_generated=generated, thinking=trace
    )
