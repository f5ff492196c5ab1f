"""Variant stage: grouped-query attention for T5, in evaluation and in training.

transformers' ``T5Attention`` projects keys and values with ``view(..., -1, d_kv)``, so once its ``k`` and
``v`` projections are narrowed to ``kv_heads * d_kv`` outputs the keys, values and the KV cache hold
``kv_heads`` heads. What it cannot do is attend H query heads to G key/value heads: its eager path
multiplies ``(B, H, T, D) @ (B, G, D, S)``. This module registers ``gqa_t5``, an attention function in
transformers' ``AttentionInterface`` that T5 calls through ``config._attn_implementation``. BART, mBART,
Pegasus and Marian (:mod:`gqa_eval.variant.bart`) reshape K/V the same way and call it too: their
queries' ``head_dim**-0.5`` arrives as ``scaling``, they have no position bias, and their one config
routes the encoder here as well, where H == G:

- H == G (MHA, T5's encoder, the BART-like encoders): delegated unchanged to transformers' SDPA
  function, so an unconverted model and a G=H conversion run the very same kernels.
- H > G: the query heads of a group are folded into the query-length axis,
  ``"b (g r) t d -> b g (r t) d"``, and SDPA runs on the G key/value heads. K/V are never repeated to H
  heads (Ainslie et al. 2023, arXiv 2305.13245, sec. 2.2: each group shares one key and value head).
  Heads are grouped contiguously, head h belongs to group h // (H/G), as torch's ``enable_gqa`` and
  transformers' ``repeat_kv``.

T5 folds its relative position bias into the scores and does not scale them (``scaling=1.0``); both are
kept. SDPA gets only what it must, in the broadcast shapes transformers passes: the relative bias stays
per query head and batch-free, ``(1, H, T, S)`` -> ``(1, G, r*T, S)``; a padding mask stays ``(B, 1, 1, S)``
at decode; cross-attention's bias, all zeros in T5, is dropped, so unpadded cross-attention runs with
``attn_mask=None``. Only a bias and a padding mask in one layer are summed to ``(B, G, r*T, S)``.

The trainer (``gqa_eval.training``) runs T5 through ``gqa_t5_train``: the same folding, bias and masks,
every layer (MHA included) computed by a matmul kernel whose scores stay in the bfloat16 autocast dtype
(:func:`_matmul_attention`), where SDPA would fall back to a float32 mask per layer.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

ATTN_IMPLEMENTATION = "gqa_t5"  # evaluation: SDPA kernels
TRAINING_ATTN_IMPLEMENTATION = "gqa_t5_train"  # the trainer: scores in the autocast dtype
DECODER_ATTN_IMPLEMENTATION = "gqa_decoder"  # decoder-only families: SDPA kernels on G key/value heads
# What the folded layout does not express: handed to transformers' SDPA function, which runs (or refuses) them
DELEGATED_KWARGS = ("softcap", "s_aux", "sinks", "position_bias")


def _as_additive(mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """Turn a boolean keep-mask into an additive float mask; float masks pass through."""
    if mask is None or mask.dtype != torch.bool:
        return mask
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, torch.finfo(dtype).min)


def _fold_heads(bias: torch.Tensor, g: int, r: int, t: int) -> torch.Tensor:
    """Lay an additive bias out as the folded queries ``(B', G, r*T, S)``, keeping broadcast dims broadcast.

    ``bias`` is broadcastable to ``(B, H, T, S)`` with H = G * r; its batch dim B' (1 or B) is kept as it is.
    A bias shared by all heads is not copied per head, and one shared by all queries is not copied per query.
    """
    if bias.dim() < 4:
        bias = bias.reshape((1,) * (4 - bias.dim()) + tuple(bias.shape))
    nb, nh, nt, s = bias.shape
    if nh == 1 and (nt == 1 or t == 1):
        return bias  # (B', 1, 1, S) or (B', 1, T=1, S): broadcasts over every folded query row
    if nh == 1:
        # a per-query bias shared by the heads: the r heads of a group each need its T rows
        return bias.unsqueeze(2).expand(nb, 1, r, nt, s).reshape(nb, 1, r * nt, s)  # (B', 1, r*T, S)
    if nt == 1 and t > 1:
        bias = bias.expand(nb, nh, t, s)
    return bias.reshape(nb, g, r * t, s)  # (B', H, T, S) -> (B', G, r*T, S); a view when H/T strides allow


def _matmul_attention(
    q: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    masks: list[torch.Tensor],
    scaling: float,
    dropout: float,
) -> torch.Tensor:
    """Attention of folded queries ``(B, G, r*T, D)`` with the scores kept in the inputs' dtype.

    T5's relative position bias is learned, so SDPA cannot use its fused kernels and falls back to a
    float32 mask per layer; under bfloat16 autocast this keeps the scores in bfloat16, which halves a
    long-document training step on CPU. Masks (already folded) are applied in order: a float one added,
    a boolean keep-mask filled with the dtype's minimum.
    """
    scores = torch.matmul(q, key.transpose(-1, -2))  # (B, G, r*T, S)
    if scaling != 1.0:
        scores = scores * scaling
    for m in masks:
        if m.dtype == torch.bool:
            scores = scores.masked_fill(~m, torch.finfo(scores.dtype).min)
        else:
            scores = scores + m.to(scores.dtype)
    probs = F.dropout(torch.softmax(scores, dim=-1), p=dropout, training=dropout > 0)
    return torch.matmul(probs, value)  # (B, G, r*T, D)


def grouped_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    bias: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    mask: torch.Tensor | None = None,
    kernel: str = "sdpa",
) -> torch.Tensor:
    """Attention of H query heads over G = H / r key/value heads without repeating K/V.

    The scores get ``bias + mask``. Each is laid out for the folded queries with its broadcast dims kept
    (``_fold_heads``), so a bias shared across the batch stays batch 1 and a padding mask stays one row per
    example; only when both are given is their sum, ``(B, G, r*T, S)``, materialised (SDPA takes one mask).

    Args:
        query: ``(B, H, T, D)``.
        key: ``(B, G, S, D)``.
        value: ``(B, G, S, D)``.
        bias: additive scores bias broadcastable to ``(B, H, T, S)``, e.g. T5's ``(1, H, T, S)`` relative
            positions, or None.
        scaling: factor on ``q @ k^T`` (1.0 for T5).
        dropout: attention dropout probability (training only).
        mask: a second additive (or boolean keep-) mask broadcastable to ``(B, H, T, S)``, e.g. padding
            ``(B, 1, 1, S)``, or None.
        kernel: ``sdpa`` (evaluation: torch's fused attention) or ``matmul`` (training on CPU, see
            :func:`_matmul_attention`).

    Returns:
        ``(B, T, H, D)``, the layout transformers' attention functions return.
    """
    b, h, t, d = query.shape
    g = key.shape[1]
    if h % g:
        raise ValueError(f"{h} query heads cannot share {g} key/value heads: {g} must divide {h}")
    r = h // g
    q = query.reshape(b, g, r * t, d)  # (B, H, T, D) -> (B, G, r*T, D); head h = g*r + j, row j*T + t
    if kernel == "matmul":
        masks = [_fold_heads(m, g, r, t) for m in (bias, mask) if m is not None]
        out = _matmul_attention(q, key, value, masks, scaling, dropout)
        return out.reshape(b, h, t, d).transpose(1, 2)
    parts = [_fold_heads(_as_additive(m, query.dtype), g, r, t) for m in (bias, mask) if m is not None]
    attn_mask = None if not parts else parts[0] if len(parts) == 1 else parts[0] + parts[1]
    out = F.scaled_dot_product_attention(q, key, value, attn_mask=attn_mask, dropout_p=dropout, scale=scaling)
    # reshape, not view: CUDA kernels may return (B, G, r*T, D) with a non-contiguous layout
    return out.reshape(b, h, t, d).transpose(1, 2)  # (B, G, r*T, D) -> (B, T, H, D)


def _is_t5_cross_attention(module: torch.nn.Module) -> bool:
    """A T5 decoder's cross-attention: its ``position_bias`` is the zeros transformers' T5 builds in place
    of a relative bias (the encoder padding comes separately, as the mask)."""
    return (
        getattr(module, "is_decoder", False)
        and not getattr(module, "is_causal", True)
        and not getattr(module, "has_relative_attention_bias", True)
    )


def _bias_in_head_order(module: torch.nn.Module, bias: torch.Tensor | None) -> torch.Tensor | None:
    """The shared relative bias ``(B', H, T, S)`` in this layer's head order (conversion ``clustered``
    permutes each layer's heads differently; :func:`gqa_eval.variant.t5.set_bias_orders`)."""
    order = getattr(module, "gqa_bias_head_order", None)
    if order is None or bias is None or bias.dim() != 4 or bias.shape[1] != len(order):
        return bias
    index = getattr(module, "_gqa_bias_index", None)
    if index is None or index.device != bias.device:
        index = torch.tensor(order, device=bias.device)
        module._gqa_bias_index = index
    return bias.index_select(1, index)


def gqa_t5_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    position_bias: torch.Tensor | None = None,
    kernel: str = "sdpa",
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """``AttentionInterface`` entry for T5 attention layers with G <= H key/value heads.

    ``kernel="sdpa"`` (``gqa_t5``, evaluation) runs H == G through transformers' own SDPA function;
    ``kernel="matmul"`` (``gqa_t5_train``, the trainer's) runs every layer, the encoder's too, through
    :func:`_matmul_attention`.
    """
    position_bias = _bias_in_head_order(module, position_bias)
    if kernel == "sdpa" and query.shape[1] == key.shape[1]:
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
    if _is_t5_cross_attention(module):
        position_bias = None  # all zeros: adding it would only cost a (B, H, T, S) mask
    t, s = query.shape[2], key.shape[2]
    if attention_mask is None and t > 1 and getattr(module, "is_causal", False):
        # transformers leaves the causal mask to SDPA's is_causal flag when it can; the folded layout needs it
        # spelled out. Query i (after s - t cached positions) sees keys j <= i + s - t. It is batch-free, so
        # it goes into the (1, H, T, S) bias rather than a per-example mask.
        keep = torch.ones(t, s, dtype=torch.bool, device=query.device).tril(diagonal=s - t)[None, None]
        min_value = torch.finfo(query.dtype).min
        if kernel == "matmul":
            attention_mask = keep  # filled after the bias is added, in the scores' (autocast) dtype
        elif position_bias is None:
            position_bias = _as_additive(keep, query.dtype)  # (1, 1, T, S)
        else:
            position_bias = torch.where(keep, position_bias, min_value)  # (1, H, T, S)
    out = grouped_attention(
        query, key, value, position_bias, 1.0 if scaling is None else scaling, dropout, mask=attention_mask,
        kernel=kernel,
    )  # fmt: skip
    return out, None


def gqa_decoder_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """``AttentionInterface`` entry (``gqa_decoder``) for decoder-only attentions with G < H K/V heads.

    transformers' SDPA function avoids copying K/V to H heads only without a mask or, eagerly, at one query
    position; compiled decoding over a static cache always has a mask, so there it runs ``repeat_kv`` every
    step and layer. Here every layer with a mask (or at one query position) folds its queries onto the G
    K/V heads instead (:func:`grouped_attention`). Delegated unchanged to the SDPA function: H == G, dropout,
    anything in :data:`DELEGATED_KWARGS` (logit soft-capping, attention sinks), and a causal prefill with
    no mask, which SDPA already runs on G heads (``enable_gqa``) with its causal kernels.
    """
    h, g, t = query.shape[1], key.shape[1], query.shape[2]
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    if (
        h == g
        or dropout > 0
        or any(kwargs.get(name) is not None for name in DELEGATED_KWARGS)
        or (attention_mask is None and t > 1 and causal)
    ):
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, is_causal=is_causal,
            **kwargs,
        )  # fmt: skip
    scale = query.shape[-1] ** -0.5 if scaling is None else scaling
    return grouped_attention(query, key, value, None, scale, mask=attention_mask), None


AttentionInterface.register(ATTN_IMPLEMENTATION, gqa_t5_attention_forward)
AttentionInterface.register(TRAINING_ATTN_IMPLEMENTATION, partial(gqa_t5_attention_forward, kernel="matmul"))
AttentionInterface.register(DECODER_ATTN_IMPLEMENTATION, gqa_decoder_attention_forward)
# The masks are SDPA's (boolean, or None where SDPA's own causal flag suffices), so H == G is unchanged.
for _name in (ATTN_IMPLEMENTATION, TRAINING_ATTN_IMPLEMENTATION, DECODER_ATTN_IMPLEMENTATION):
    AttentionMaskInterface.register(_name, sdpa_mask)
