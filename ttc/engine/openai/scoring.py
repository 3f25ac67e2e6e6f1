"""PRM scoring over HTTP: log P(token) at step positions, read from `/v1/completions` log-probabilities, and
a classifier head's per-token class probabilities from vLLM's pooling API.

A request for the text up to the position with `max_tokens=1`, `logprobs` and an equal `logit_bias` on the
asked tokens (their ratio stays exact, and they become the only candidates, so they are in the top k); a token
a server still leaves out of its top k is read by a second request biased towards it alone. vLLM takes lists
of prompts, so the prompts of one call go up to BATCH per request; and whole solutions (`logprobs_at`) are
scored from its `prompt_logprobs`, one request for up to BATCH solutions rather than one per step tag.
`PRMScoring` is mixed into OpenAIEngine and uses only what it names below of it.

`pooled_rows` posts token ids to vLLM's `POST /pooling` (the shape of vLLM's PoolingRequest / PoolingResponse,
vllm/entrypoints/openai/protocol.py in v0.9-v0.10, vllm/entrypoints/pooling/pooling/protocol.py later):
    {"model": NAME, "input": [[ids...], ...], "encoding_format": "float"}
    -> {"data": [{"index": i, "object": "pooling", "data": [[p_0, p_1, ...], ...]}, ...],
        "usage": {"prompt_tokens": N, ...}}
A process reward model (Qwen2ForProcessRewardModel) pools with STEP: one row per input token whose id is the
step tag (vLLM's default step_tag_id for it is 151651, `<extra_0>`; `--pooler-config '{"step_tag_id": N}'`
sets another), each row the softmax over the head's classes; with no step_tag_id, one row per token.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ...errors import TTCRuntimeError
from ..base import Usage
from .branches import position
from .http import top_logprobs, usage_counts

TOKEN_PROMPTS = ("vllm", "sglang", "llama-server")  # servers that take prompts as token ids
BIAS = 100.0  # logit bias that makes the asked tokens the only candidates
BATCH = 16  # prompts per scoring request where the server takes a list of them (vLLM)


class PRMScoring:
    """Log-probabilities at positions for an engine with `kind`, `plain`, `client`, `served`, `usage`, `tokenize`,
    `detokenize`, `token_text`, `timed`, `_charge` and `_map` (OpenAIEngine)."""

    whole_ok = True  # the server answers prompt_logprobs (set False on the first answer without them)

    def render(self, pieces: Sequence) -> str | list[int]:
        """A prompt from pieces (text, or tuples of token ids), as the server takes it: token ids where it
        accepts them (the first text piece tokenized with BOS and special tokens, later ones plain), else text."""
        if self.kind in TOKEN_PROMPTS:
            ids: list[int] = []
            for i, p in enumerate(pieces):
                ids += list(p) if isinstance(p, tuple) else self.tokenize(p, add_bos=i == 0, special=i == 0)
            return ids
        return "".join(p if isinstance(p, str) else self.detokenize(p) for p in pieces)

    def _score(self, prompt, token_ids: Sequence[int], acct: Usage, answer=None) -> np.ndarray:
        """log P(token_ids) of the token after `prompt` (see the module docstring); `answer`: the (chosen, top)
        of a request already made for it."""
        chosen, top = answer or self._score_request(prompt, token_ids, acct)
        values: dict[int, float] = {}
        for key, lp in ([chosen] if chosen else []) + top:
            t = self._token_of(key, token_ids)
            if t is not None and t not in values:
                values[t] = lp
        for t in [t for t in token_ids if t not in values]:
            chosen, _ = self._score_request(prompt, [t], acct)
            if chosen is None or self._token_of(chosen[0], [t]) != t:
                raise TTCRuntimeError(
                    f"server at {self.client.where} ignores logit_bias, so ttc cannot read the log-probability of "
                    f"token {t} ({self.token_text(t)!r}) for the PRM; use a server that honours logit_bias"
                )
            values[t] = chosen[1]
        return np.array([values[t] for t in token_ids], dtype=np.float64)

    def _score_request(self, prompt, token_ids: Sequence[int], acct: Usage):
        return self._score_requests([prompt], token_ids, acct)[0]

    def _next_token(self, prompts: list, extra: dict, acct: Usage) -> list[dict]:
        """The choices, in order, of one request for the one token after each prompt (a list of them: vLLM)."""
        body = {"model": self.served, "prompt": prompts[0] if len(prompts) == 1 else prompts, "max_tokens": 1}
        body.update(temperature=0.0, **extra)
        if self.kind == "vllm":
            body["return_tokens_as_token_ids"] = True
        data = self.client.json("POST", "/completions", body)
        self._charge(acct, usage_counts(data)[0], 0)  # the one forced token is not a generation
        choices = sorted(data.get("choices") or [{}], key=lambda c: c.get("index", 0))
        if len(choices) != len(prompts):
            raise TTCRuntimeError(
                f"server at {self.client.where} answered {len(choices)} choices for {len(prompts)} prompts"
            )
        return choices

    def _batched(self, fn, items: list, size: int = BATCH) -> list:
        """fn over chunks of `size` items, concurrently; its results per item, flattened in order."""
        chunks = [items[i : i + size] for i in range(0, len(items), size)]
        return [r for part in self._map(fn, chunks) for r in part]

    def _score_requests(self, prompts: list, token_ids: Sequence[int], acct: Usage) -> list:
        """(chosen, top) after each prompt, from one request (a list of prompts: vLLM)."""
        k = min(20, max(5, len(token_ids)))
        if self.kind == "llama-server":
            bias = [[int(t), BIAS] for t in token_ids]
        else:
            bias = {str(int(t)): BIAS for t in token_ids}
        out = []
        for choice in self._next_token(prompts, {"logprobs": k, "logit_bias": bias}, acct):
            chosen, top = top_logprobs(choice)
            if chosen is None and not top:
                raise TTCRuntimeError(
                    f"server at {self.client.where} returned no log-probabilities (logprobs on /v1/completions); "
                    "the PRM needs them"
                )
            out.append((chosen, top))
        return out

    def _token_of(self, key, candidates: Sequence[int]) -> int | None:
        if isinstance(key, int):
            return key if key in candidates else None
        hits = [t for t in candidates if self.detokenize([t]) == key]
        if len(hits) > 1:
            raise TTCRuntimeError(
                f"tokens {hits} read the same ({key!r}) and server at {self.client.where} names log-probs by text"
            )
        return hits[0] if hits else None

    def scores_at(self, prompts: list[list], token_ids: Sequence[int]) -> list[np.ndarray]:
        """For each prompt (a list of pieces): log P(token_ids) of the next token; concurrent."""
        acct = self.usage
        if self.kind == "vllm" and not self.plain and len(prompts) > 1:  # vLLM takes a list of prompts
            rendered = self._map(self.render, prompts)
            answers = self._batched(lambda c: self._score_requests(c, token_ids, acct), rendered)
            return self._map(lambda job: self._score(job[0], token_ids, acct, job[1]), list(zip(rendered, answers)))
        return self._map(lambda pieces: self._score(self.render(pieces), token_ids, acct), prompts)

    def logprobs_at(self, prefix, suffixes, positions, token_ids) -> list[np.ndarray]:
        with self.timed():
            head = tuple(prefix) if isinstance(prefix, list) else prefix
            out = [np.zeros((len(pos), len(token_ids)), dtype=np.float64) for pos in positions]
            jobs, where = [], []
            suffix_ids = [tuple(s) if isinstance(s, list) else tuple(self.tokenize(s, add_bos=False)) for s in suffixes]
            if self.kind == "vllm" and not self.plain and self.whole_ok:  # vLLM's prompt_logprobs: whole solutions
                acct = self.usage
                whole = self._batched(
                    lambda c: self._score_whole(head, c, token_ids, acct), list(zip(suffix_ids, positions))
                )
            else:
                whole = [[None] * len(pos) for pos in positions]
            for i, (ids, pos, rows) in enumerate(zip(suffix_ids, positions, whole)):
                for k, (p, row) in enumerate(zip(pos, rows)):
                    if row is not None:
                        out[i][k] = row
                    else:  # one request per position, biased towards the asked tokens
                        jobs.append([head, ids[: position(p, len(ids)) + 1]])
                        where.append((i, k))
            for (i, k), row in zip(where, self.scores_at(jobs, token_ids)):
                out[i][k] = row
            return out

    def _score_whole(self, head, jobs: list, token_ids: Sequence[int], acct: Usage) -> list[list]:
        """log P(token_ids) after each position of whole solutions (jobs of (suffix ids, positions)), from one
        request: vLLM's `prompt_logprobs` give the top k (keyed by token id, before any bias or temperature)
        at every prompt token, and the one generated token's `logprobs` the top k after the last. A row is None
        where an asked token is not in the top k (read then by a biased request)."""
        todo = [j for j, (_, pos) in enumerate(jobs) if pos]
        out: list[list] = [[] for _ in jobs]
        if not todo:
            return out
        prompts = [self.render([head, jobs[j][0]]) for j in todo]
        k = 20  # vLLM's --max-logprobs default
        choices = self._next_token(prompts, {"logprobs": k, "prompt_logprobs": k}, acct)
        for j, prompt, choice in zip(todo, prompts, choices):
            out[j] = self._rows_whole(prompt, *jobs[j], choice, token_ids)
        return out

    def _rows_whole(self, prompt: list[int], ids: tuple, pos: Sequence[int], choice: dict, token_ids) -> list:
        offset = len(prompt) - len(ids)
        rows_at = choice.get("prompt_logprobs")
        if rows_at is None:  # a server that says vLLM but ignores prompt_logprobs: a request per step tag
            self.whole_ok = False
            return [None] * len(pos)
        if not isinstance(rows_at, list) or len(rows_at) != len(prompt):
            raise TTCRuntimeError(
                f"server at {self.client.where} answered prompt_logprobs with "
                f"{len(rows_at) if isinstance(rows_at, list) else 'no'} entries for a prompt of {len(prompt)} tokens"
            )
        chosen, top = top_logprobs(choice)
        last = {key: lp for key, lp in ([chosen] if chosen else []) + top if isinstance(key, int)}
        out: list = []
        for p in pos:
            q = offset + position(p, len(ids)) + 1  # the entry of the token after position p
            if q < len(prompt):
                entry = rows_at[q] or {}
                found = {int(t): float(v["logprob"]) for t, v in entry.items() if isinstance(v, dict)}
            else:
                found = last
            out.append(np.array([found[t] for t in token_ids]) if all(t in found for t in token_ids) else None)
        return out

    def pooled_rows(self, inputs: list[list[int]], batch: int = 16) -> list[np.ndarray]:
        """For each token-id input: the rows vLLM's /pooling returns for it, an array [rows, classes]; batches of
        `batch` inputs per request, concurrently. A malformed answer is a one-line TTCRuntimeError."""
        acct = self.usage

        def one(chunk: list[list[int]]) -> list[np.ndarray]:
            body = {"model": self.served, "input": [list(map(int, x)) for x in chunk], "encoding_format": "float"}
            data = self.client.json("POST", "/pooling", body, api=False)
            return self._rows_of(data, chunk, acct)

        with self.timed():
            return self._batched(one, inputs, batch)

    def _rows_of(self, data, chunk: list[list[int]], acct: Usage) -> list[np.ndarray]:
        where = f"server at {self.client.where} answered POST /pooling"
        items = data.get("data") if isinstance(data, dict) else None
        if not isinstance(items, list) or len(items) != len(chunk):
            got = "no data list" if not isinstance(items, list) else f"{len(items)} items"
            raise TTCRuntimeError(
                f"{where} with {got} for {len(chunk)} inputs (vLLM's PoolingResponse has one per input)"
            )
        out: list[np.ndarray | None] = [None] * len(chunk)
        for j, item in enumerate(items):
            index = item.get("index", j) if isinstance(item, dict) else None
            rows = item.get("data") if isinstance(item, dict) else None
            try:  # no rows (no step tag in the input) is a well-formed answer
                arr = np.zeros((0, 2)) if rows == [] else np.asarray(rows, dtype=np.float64)
            except (TypeError, ValueError):
                arr = np.zeros(0)
            if not isinstance(index, int) or not 0 <= index < len(chunk) or out[index] is not None:
                raise TTCRuntimeError(f"{where} with a bad index {index!r} in data[{j}]")
            if arr.ndim != 2 or arr.shape[1] < 2 or not np.isfinite(arr).all():
                raise TTCRuntimeError(
                    f"{where} without per-token class rows in data[{j}].data (a list of [p_0, p_1, ...] is "
                    "needed): serve a process reward model (Qwen2ForProcessRewardModel) with its STEP pooling"
                )
            out[index] = arr
        usage = data.get("usage") or {}
        prompt = int(usage.get("prompt_tokens") or sum(len(x) for x in chunk))
        self._charge(acct, prompt, 0)
        return out
