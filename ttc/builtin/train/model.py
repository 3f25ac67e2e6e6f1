"""A llama-architecture transformer in torch, written in llama.cpp's conventions so it exports as is.

RMSNorm, SwiGLU feed-forward, no biases, rotary embeddings that rotate ADJACENT pairs of dimensions
(llama.cpp's `llama` architecture, LLAMA_ROPE_TYPE_NORM), attention scaled by 1/sqrt(head_dim), untied
input and output embeddings. Parameter names map one to one onto GGUF tensor names (`gguf_tensors`).
The shape is `ttc.builtin.gguf_llama.LlamaShape`, the same object the GGUF writer takes.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..gguf_llama import LlamaShape


class RMSNorm(nn.Module):
    def __init__(self, d: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rope_tables(positions: torch.Tensor, head_dim: int, base: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin for positions (B, T): each (B, 1, T, head_dim/2)."""
    inv = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)  # (hd/2,)
    ang = positions.to(torch.float32)[:, None, :, None] * inv  # (B, 1, T, hd/2)
    return ang.cos(), ang.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate adjacent pairs (x[2i], x[2i+1]) of x (B, H, T, hd) by the angles in cos/sin."""
    x0, x1 = x[..., 0::2], x[..., 1::2]  # (B, H, T, hd/2)
    return torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1).flatten(-2)


class Block(nn.Module):
    def __init__(self, s: LlamaShape):
        super().__init__()
        d, kv = s.n_embd, s.n_head_kv * s.head_dim
        self.n_head, self.n_head_kv, self.head_dim = s.n_head, s.n_head_kv, s.head_dim
        self.attn_norm = RMSNorm(d, s.rms_eps)
        self.wq = nn.Linear(d, d, bias=False)
        self.wk = nn.Linear(d, kv, bias=False)
        self.wv = nn.Linear(d, kv, bias=False)
        self.wo = nn.Linear(d, d, bias=False)
        self.ffn_norm = RMSNorm(d, s.rms_eps)
        self.w_gate = nn.Linear(d, s.n_ff, bias=False)
        self.w_up = nn.Linear(d, s.n_ff, bias=False)
        self.w_down = nn.Linear(s.n_ff, d, bias=False)

    def forward(self, x, cos, sin, cache=None, mask=None):
        """x (B, T, d). cache: None (training, causal) or a KVCache layer slot that this call appends to."""
        B, T, _ = x.shape
        h = self.attn_norm(x)
        q = self.wq(h).view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, H, T, hd)
        k = self.wk(h).view(B, T, self.n_head_kv, self.head_dim).transpose(1, 2)
        v = self.wv(h).view(B, T, self.n_head_kv, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:
            k, v = cache.append(k, v)
        if self.n_head_kv != self.n_head:
            rep = self.n_head // self.n_head_kv
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        if mask is None:
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        x = x + self.wo(a.transpose(1, 2).reshape(B, T, -1))
        h = self.ffn_norm(x)
        return x + self.w_down(F.silu(self.w_gate(h)) * self.w_up(h))


class LayerCache:
    """Preallocated keys and values of one layer: (B, H_kv, T_max, hd), filled up to `length`."""

    def __init__(self, B: int, s: LlamaShape, t_max: int):
        self.k = torch.zeros(B, s.n_head_kv, t_max, s.head_dim)
        self.v = torch.zeros_like(self.k)
        self.length = 0

    def append(self, k, v):
        T = k.shape[2]
        self.k[:, :, self.length : self.length + T] = k
        self.v[:, :, self.length : self.length + T] = v
        self.length += T
        return self.k[:, :, : self.length], self.v[:, :, : self.length]

    def keep(self, rows: torch.Tensor):
        self.k, self.v = self.k[rows], self.v[rows]


class Llama(nn.Module):
    def __init__(self, shape: LlamaShape):
        super().__init__()
        self.shape = shape
        self.tok_embd = nn.Embedding(shape.n_vocab, shape.n_embd)
        self.blocks = nn.ModuleList(Block(shape) for _ in range(shape.n_layer))
        self.norm = RMSNorm(shape.n_embd, shape.rms_eps)
        self.output = nn.Linear(shape.n_embd, shape.n_vocab, bias=False)
        self.apply(self._init)
        for b in self.blocks:  # scale the residual projections down with depth (GPT-2 style)
            for w in (b.wo.weight, b.w_down.weight):
                nn.init.normal_(w, std=0.02 / math.sqrt(2 * shape.n_layer))

    @staticmethod
    def _init(m):
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)

    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, ids, positions=None, caches=None, mask=None, hidden=False):
        """ids (B, T) -> logits (B, T, V) (or final hidden states (B, T, d) with hidden=True).

        Training: positions default to 0..T-1 and attention is causal. Incremental decoding: pass
        `positions` (B, T), `caches` (one LayerCache per block) and a boolean `mask` (B, 1, T, T_cached+T).
        """
        if positions is None:
            positions = torch.arange(ids.shape[1]).expand(ids.shape[0], -1)
        cos, sin = rope_tables(positions, self.shape.head_dim, self.shape.rope_base)
        x = self.tok_embd(ids)
        for i, b in enumerate(self.blocks):
            x = b(x, cos, sin, None if caches is None else caches[i], mask)
        x = self.norm(x)
        return x if hidden else self.output(x)

    def gguf_tensors(self) -> dict:
        """The weights as float32 numpy arrays under their GGUF names, (out, in) as llama.cpp expects."""
        t = {"token_embd.weight": self.tok_embd.weight}
        for i, b in enumerate(self.blocks):
            p = f"blk.{i}."
            t.update(
                {
                    p + "attn_norm.weight": b.attn_norm.weight,
                    p + "attn_q.weight": b.wq.weight,
                    p + "attn_k.weight": b.wk.weight,
                    p + "attn_v.weight": b.wv.weight,
                    p + "attn_output.weight": b.wo.weight,
                    p + "ffn_norm.weight": b.ffn_norm.weight,
                    p + "ffn_gate.weight": b.w_gate.weight,
                    p + "ffn_up.weight": b.w_up.weight,
                    p + "ffn_down.weight": b.w_down.weight,
                }
            )
        t["output_norm.weight"] = self.norm.weight
        t["output.weight"] = self.output.weight
        return {k: v.detach().to(torch.float32).cpu().numpy() for k, v in t.items()}

    def load_gguf_tensors(self, tensors: dict) -> None:
        """Inverse of `gguf_tensors`: copy arrays keyed by GGUF name into the parameters."""
        own = dict(zip(self.gguf_tensors().keys(), self._param_list()))
        with torch.no_grad():
            for name, p in own.items():
                p.copy_(torch.as_tensor(tensors[name], dtype=torch.float32).reshape(p.shape))

    def _param_list(self):
        out = [self.tok_embd.weight]
        for b in self.blocks:
            out += [b.attn_norm.weight, b.wq.weight, b.wk.weight, b.wv.weight, b.wo.weight]
            out += [b.ffn_norm.weight, b.w_gate.weight, b.w_up.weight, b.w_down.weight]
        return out + [self.norm.weight, self.output.weight]
