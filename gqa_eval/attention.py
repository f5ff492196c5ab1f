"""Variant stage, T5 part: grouped-query attention for T5's decoder.

transformers' ``T5Attention`` projects keys and values with ``view(..., -1, d_kv)``, so once its ``k`` and
``v`` projections are narrowed to ``kv_heads * d_kv`` outputs the keys, values and the KV cache hold
``kv_heads`` heads. What it cannot do is attend H query heads to G key/value heads: its eager path
multiplies ``(B, H, T, D) @ (B, G, D, S)``. This module registers ``gqa_t5``, an attention function in
transformers' ``AttentionInterface`` that T5 calls through ``config._attn_implementation``:

- H == G (MHA, and T5's encoder): delegated unchanged to transformers' SDPA function, so an unconverted
  model and a G=H conversion run the very same kernels.
- H > G: the query heads of a group are folded into the query-length axis,
  ``"b (g r) t d -> b g (r t) d"``, and SDPA runs on the G key/value heads. K/V are never repeated to H
  heads (Ainslie et al. 2023, arXiv 2305.13245, sec. 2.2: each group shares one key and value head).
  Heads are grouped contiguously, head h belongs to group h // (H/G), as torch's ``enable_gqa`` and
  transformers' ``repeat_kv``.

T5 folds its relative position bias into the scores and does not scale them (``scaling=1.0``); both are
kept. The bias stays per query head, ``(1, H, T, S)`` -> ``(1, G, r*T, S)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

ATTN_IMPLEMENTATION = "gqa_t5"


def _as_additive(mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """Turn a boolean keep-mask into an additive float mask; float masks pass through."""
    if mask is None or mask.dtype != torch.bool:
        return mask
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, torch.finfo(dtype).min)


def grouped_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    bias: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
) -> torch.Tensor:
    """Attention of H query heads over G = H / r key/value heads without repeating K/V.

    Args:
        query: ``(B, H, T, D)``.
        key: ``(B, G, S, D)``.
        value: ``(B, G, S, D)``.
        bias: additive scores bias (relative positions plus mask), broadcastable to ``(B, H, T, S)``.
        scaling: factor on ``q @ k^T`` (1.0 for T5).
        dropout: attention dropout probability (training only).

    Returns:
        ``(B, T, H, D)``, the layout transformers' attention functions return.
    """
    b, h, t, d = query.shape
    g, s = key.shape[1], key.shape[2]
    if h % g:
        raise ValueError(f"{h} query heads cannot share {g} key/value heads: {g} must divide {h}")
    r = h // g
    q = query.reshape(b, g, r * t, d)  # (B, H, T, D) -> (B, G, r*T, D); head h = g*r + j
    if bias is not None:
        bias = bias.expand(b, h, t, s).reshape(b, g, r * t, s)
    out = F.scaled_dot_product_attention(q, key, value, attn_mask=bias, dropout_p=dropout, scale=scaling)
    # reshape, not view: CUDA kernels may return (B, G, r*T, D) with a non-contiguous layout
    return out.reshape(b, h, t, d).transpose(1, 2)  # (B, G, r*T, D) -> (B, T, H, D)


def gqa_t5_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    position_bias: torch.Tensor | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """``AttentionInterface`` entry for T5 attention layers with G <= H key/value heads."""
    if query.shape[1] == key.shape[1]:
        return sdpa_attention_forward(
            module,
            query,
            key,
            value,
            attention_mask,
            dropout=dropout,
            scaling=scaling,
            position_bias=position_bias,
            **kwargs,
        )
    mask = _as_additive(attention_mask, query.dtype)
    t, s = query.shape[2], key.shape[2]
    if mask is None and t > 1 and getattr(module, "is_causal", False):
        # transformers leaves the causal mask to SDPA's is_causal flag when it can; the bias path needs it
        # spelled out. Query i (after s - t cached positions) sees keys j <= i + s - t.
        keep = torch.ones(t, s, dtype=torch.bool, device=query.device).tril(diagonal=s - t)
        mask = _as_additive(keep[None, None], query.dtype)
    if position_bias is None:
        bias = mask
    elif mask is None:
        bias = position_bias
    else:
        bias = position_bias + mask
    out = grouped_attention(query, key, value, bias, 1.0 if scaling is None else scaling, dropout)
    return out, None


AttentionInterface.register(ATTN_IMPLEMENTATION, gqa_t5_attention_forward)
# The masks are SDPA's (boolean, or None where SDPA's own causal flag suffices), so H == G is unchanged.
AttentionMaskInterface.register(ATTN_IMPLEMENTATION, sdpa_mask)
