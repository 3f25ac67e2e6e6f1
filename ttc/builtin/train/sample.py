"""Batched generation with the torch model (KV cache, left padding): greedy or temperature sampling.

Used during training (evaluation, the policy's own attempts for revision data, the PRM's training
samples) and for the final report. Rows that reach EOS are dropped from the batch as they finish.
"""

from __future__ import annotations

import torch

from .model import LayerCache, Llama


@torch.no_grad()
def generate(
    model: Llama,
    prompts: list[list[int]],
    max_new: int,
    temperature: float = 0.0,
    seed: int = 0,
    batch_size: int = 256,
    stop_id: int = 257,
) -> list[list[int]]:
    """Continuations (without the stop token) of each prompt; temperature 0 is greedy."""
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # similar lengths together
    out: list[list[int]] = [[] for _ in prompts]
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        for r, toks in zip(
            rows, _generate_batch(model, [prompts[i] for i in rows], max_new, temperature, gen, stop_id)
        ):
            out[r] = toks
    return out


def _generate_batch(model, prompts, max_new, temperature, gen, stop_id):
    s = model.shape
    B, P = len(prompts), max(len(p) for p in prompts)
    ids = torch.zeros(B, P, dtype=torch.long)
    valid = torch.zeros(B, P + max_new, dtype=torch.bool)  # which cache slots hold real tokens
    for b, p in enumerate(prompts):
        ids[b, P - len(p) :] = torch.tensor(p)
        valid[b, P - len(p) :] = True
    lengths = torch.tensor([len(p) for p in prompts])
    positions = (torch.arange(P)[None, :] - (P - lengths)[:, None]).clamp(min=0)  # (B, P)
    caches = [LayerCache(B, s, P + max_new) for _ in range(s.n_layer)]
    causal = torch.ones(P, P, dtype=torch.bool).tril()
    mask = (causal[None] & valid[:, None, :P]) | torch.eye(P, dtype=torch.bool)[None]  # pads see themselves
    logits = model(ids, positions, caches, mask[:, None])[:, -1]  # (B, V)
    alive = torch.arange(B)  # original row of each live row
    results: list[list[int]] = [[] for _ in range(B)]
    pos = lengths.clone()  # next position of each live row
    for t in range(max_new):
        if temperature > 0:
            probs = torch.softmax(logits.float() / temperature, dim=-1)
            nxt = torch.multinomial(probs, 1, generator=gen).squeeze(1)
        else:
            nxt = logits.argmax(-1)
        done = nxt == stop_id
        for i, (row, tok) in enumerate(zip(alive.tolist(), nxt.tolist())):
            if not done[i]:
                results[row].append(tok)
        if done.all() or t == max_new - 1:
            break
        if done.any():  # drop finished rows
            keep = (~done).nonzero().squeeze(1)
            alive, nxt, pos, valid = alive[keep], nxt[keep], pos[keep], valid[keep]
            for c in caches:
                c.keep(keep)
        n_cached = caches[0].length + 1
        m = valid[:, :n_cached][:, None, None, :]  # (B, 1, 1, T)
        logits = model(nxt[:, None], pos[:, None], caches, m)[:, -1]
        pos = pos + 1
    return results
