"""A small causal Transformer that encodes a short token window into per-token context vectors.

Pre-norm blocks as in nanoGPT (https://github.com/karpathy/nanoGPT, model.py ``Block``): local multi-head
self-attention then a position-wise feed-forward block. Used once per frame as the shared context encoder
of the flow couplings (DESIGN.md, "FCG"): the caller feeds the past frames plus the current audio token and
takes the last output token.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ContextEncoder"]


class _SelfAttention(nn.Module):
    """Causal multi-head self-attention over (B, T, C)."""

    def __init__(self, d_model: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.d_model = d_model
        self.num_heads = num_heads
        self.head_dim = d_model // num_heads
        self.dropout = dropout
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.resid_dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        B, T, C = x.shape
        # Python ints for split and view: traced shapes would turn into warnings and constants.
        q, k, v = self.qkv(x).split(self.d_model, dim=2)
        q = q.view(B, T, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, T, C / H)
        k = k.view(B, T, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, T, C / H)
        v = v.view(B, T, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, T, C / H)
        y = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0
        )
        y = y.transpose(1, 2).reshape(B, T, self.d_model)  # (B, T, C)
        return self.resid_dropout(self.proj(y))


class _Block(nn.Module):
    """Pre-norm block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, d_model: int, num_heads: int, ff_mult: int, dropout: float) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(d_model)
        self.attn = _SelfAttention(d_model, num_heads, dropout)
        self.ln_2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, ff_mult * d_model),
            nn.GELU(),
            nn.Linear(ff_mult * d_model, d_model),
            nn.Dropout(dropout),
        )

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class ContextEncoder(nn.Module):
    """Causal Transformer over a window of at most max_len tokens: (B, T, d_model) -> (B, T, d_model).

    Attention is local: a token attends to itself and the earlier tokens of its window of max_len.
    Positions are learned and right-aligned, so the last (current) token always gets the same position
    embedding however many past tokens precede it. Output token t depends only on tokens <= t.
    """

    def __init__(
        self,
        d_model: int = 64,
        num_heads: int = 8,
        num_layers: int = 2,
        ff_mult: int = 4,
        max_len: int = 11,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if d_model % num_heads != 0:
            raise ValueError(f"d_model ({d_model}) must be divisible by num_heads ({num_heads})")
        self.d_model = d_model
        self.max_len = max_len
        self.pos_emb = nn.Parameter(0.02 * torch.randn(max_len, d_model))
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(_Block(d_model, num_heads, ff_mult, dropout) for _ in range(num_layers))
        self.ln_f = nn.LayerNorm(d_model)

    def forward(self, tokens: Tensor) -> Tensor:
        # Shapes are traced values under torch.jit.trace: check them only when running eagerly.
        if not torch.jit.is_tracing() and (
            tokens.ndim != 3 or tokens.shape[2] != self.d_model or not 1 <= tokens.shape[1] <= self.max_len
        ):
            raise ValueError(
                f"Expected tokens of shape (B, T, {self.d_model}) with 1 <= T <= {self.max_len}, "
                f"got {tuple(tokens.shape)}"
            )
        x = self.dropout(tokens + self.pos_emb[self.max_len - tokens.shape[1] :])
        for block in self.blocks:
            x = block(x)
        return self.ln_f(x)
