"""PRM scoring over HTTP: log P(token) at step positions, read from `/v1/completions` log-probabilities, and
a classifier head's per-token class probabilities from vLLM's pooling API.

A request for the text up to the position with `max_tokens=1`, `logprobs` and an equal `logit_bias` on the
asked tokens (their ratio stays exact, and they become the only candidates, so they are in the top k); a token
a server still leaves out of its top k is read by a second request biased towards it alone. `PRMScoring` is
mixed into OpenAIEngine and uses only what it names below of it.

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


class PRMScoring:
    """Log-probabilities at positions for an engine with `kind`, `client`, `served`, `usage`, `tokenize`,
    `detokenize`, `token_text`, `timed`, `_charge` and `_map` (OpenAIEngine)."""

    def render(self, pieces: Sequence) -> str | list[int]:
        """A prompt from pieces (text, or tuples of token ids), as the server takes it: token ids where it
        accepts them (the first text piece tokenized with BOS and special tokens, later ones plain), else text."""
        if self.kind in TOKEN_PROMPTS:
            ids: list[int] = []
            for i, p in enumerate(pieces):
                ids += list(p) if isinstance(p, tuple) else self.tokenize(p, add_bos=i == 0, special=i == 0)
            return ids
        return "".join(p if isinstance(p, str) else self.detokenize(p) for p in pieces)

    def _score(self, prompt, token_ids: Sequence[int], acct: Usage) -> np.ndarray:
        """log P(token_ids) of the token after `prompt` (see the module docstring)."""
        chosen, top = self._score_request(prompt, token_ids, acct)
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
        k = min(20, max(5, len(token_ids)))
        body = {"model": self.served, "prompt": prompt, "max_tokens": 1, "temperature": 0.0, "logprobs": k}
        if self.kind == "llama-server":
            body["logit_bias"] = [[int(t), BIAS] for t in token_ids]
        else:
            body["logit_bias"] = {str(int(t)): BIAS for t in token_ids}
        if self.kind == "vllm":
            body["return_tokens_as_token_ids"] = True
        data = self.client.json("POST", "/completions", body)
        self._charge(acct, usage_counts(data)[0], 0)  # the one forced token is not a generation
        choices = data.get("choices") or [{}]
        chosen, top = top_logprobs(choices[0])
        if chosen is None and not top:
            raise TTCRuntimeError(
                f"server at {self.client.where} returned no log-probabilities (logprobs on /v1/completions); "
                "the PRM needs them"
            )
        return chosen, top

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
        return self._map(lambda pieces: self._score(self.render(pieces), token_ids, acct), prompts)

    def logprobs_at(self, prefix, suffixes, positions, token_ids) -> list[np.ndarray]:
        with self.timed():
            head = tuple(prefix) if isinstance(prefix, list) else prefix
            out = [np.zeros((len(pos), len(token_ids)), dtype=np.float64) for pos in positions]
            jobs, where = [], []
            for i, (s, pos) in enumerate(zip(suffixes, positions)):
                ids = tuple(s) if isinstance(s, list) else tuple(self.tokenize(s, add_bos=False))
                for k, p in enumerate(pos):
                    jobs.append([head, ids[: position(p, len(ids)) + 1]])
                    where.append((i, k))
            for (i, k), row in zip(where, self.scores_at(jobs, token_ids)):
                out[i][k] = row
            return out

    def pooled_rows(self, inputs: list[list[int]], batch: int = 16) -> list[np.ndarray]:
        """For each token-id input: the rows vLLM's /pooling returns for it, an array [rows, classes]; batches of
        `batch` inputs per request, concurrently. A malformed answer is a one-line TTCRuntimeError."""
        acct = self.usage
        chunks = [inputs[i : i + batch] for i in range(0, len(inputs), batch)]

        def one(chunk: list[list[int]]) -> list[np.ndarray]:
            body = {"model": self.served, "input": [list(map(int, x)) for x in chunk], "encoding_format": "float"}
            data = self.client.json("POST", "/pooling", body, api=False)
            return self._rows_of(data, chunk, acct)

        with self.timed():
            return [rows for part in self._map(one, chunks) for rows in part]

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
