"""PRM scoring over HTTP: log P(token) at step positions, read from `/v1/completions` log-probabilities.

A request for the text up to the position with `max_tokens=1`, `logprobs` and an equal `logit_bias` on the
asked tokens (their ratio stays exact, and they become the only candidates, so they are in the top k); a token
a server still leaves out of its top k is read by a second request biased towards it alone. `PRMScoring` is
mixed into OpenAIEngine and uses only what it names below of it.
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
