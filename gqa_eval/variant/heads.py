"""Variant stage: calibrated conversion methods, ``aligned`` and ``clustered``, that act on whole heads.

Both reshape an MHA checkpoint's heads without changing what it computes, then mean-pool contiguous
groups (:func:`gqa_eval.variant.pooling.pool_heads`), so only the pooling loses anything:

- ``aligned`` (Jin et al. 2024, arXiv 2412.20677, "align heads before merging"): within each group, every
  head's keys are rotated onto the group's first head by an orthogonal Procrustes fit on calibration
  activations; the same rotation is folded into that head's query projection (``q.k`` unchanged). Values
  likewise, the transposed rotation folded into the head's input columns of the output projection. Under
  RoPE (decoder-only families) the key/query rotation is restricted to one 2x2 rotation per frequency pair
  ``(i, i + D/2)`` (transformers' ``rotate_half`` pairing), which commutes with RoPE; values get a full
  orthogonal rotation. Families with a per-head query/key norm (Qwen3's ``q_norm``/``k_norm``) are refused.
- ``clustered`` (as AsymGQA, Chen et al. 2024, arXiv 2406.14963): heads are grouped by the cosine
  similarity of their key and value activations instead of by index (:func:`cluster_heads`), and each
  layer's heads are permuted (query, key, value rows, output columns) so the groups are contiguous.
  T5 shares one relative position bias, computed in the first decoder layer, across all layers; a layer
  whose self-attention heads are permuted reads it through ``bias_head_order`` (see :func:`set_bias_orders`).
- ``clustered_aligned``: the permutation, then the alignment.

The statistics are Gram matrices of each K/V projection's outputs over the calibration tokens
(:mod:`gqa_eval.variant.calibration`), accumulated in float64.
"""

from __future__ import annotations

import torch
from torch import nn

CALIBRATED = ("aligned", "clustered", "clustered_aligned")


def uses_calibration(method: str) -> bool:
    return method in CALIBRATED


def _head_rows(weight: torch.Tensor, heads: int) -> torch.Tensor:
    """``(H*D, ...)`` -> ``(H, D, ...)`` view."""
    return weight.reshape(heads, weight.shape[0] // heads, *weight.shape[1:])


def cosine_similarity(gram: torch.Tensor, heads: int) -> torch.Tensor:
    """``(H, H)`` cosine similarity of the heads' flattened activations, from their ``(H*D, H*D)`` Gram."""
    d = gram.shape[0] // heads
    blocks = gram.reshape(heads, d, heads, d)
    inner = torch.einsum("hdgd->hg", blocks)  # <A_h, A_g>_F = trace of the (h, g) block
    norm = inner.diagonal().clamp_min(1e-30).sqrt()
    return inner / (norm[:, None] * norm[None, :])


def cluster_heads(similarity: torch.Tensor, groups: int) -> list[int]:
    """A balanced greedy grouping: the head order that makes ``groups`` equal groups contiguous.

    Rule: take the lowest-index head not yet grouped as a group's seed, add the ``H/groups - 1``
    ungrouped heads most similar to it (ties: lower index first), repeat. Each group lists its heads in
    ascending order; groups come in the order of their seeds. Deterministic given the similarity.
    """
    n = similarity.shape[0]
    size = n // groups
    free = list(range(n))
    order: list[int] = []
    for _ in range(groups):
        seed = free.pop(0)
        ranked = sorted(free, key=lambda h: (-float(similarity[seed, h]), h))[: size - 1]
        for h in ranked:
            free.remove(h)
        order += sorted([seed, *ranked])
    return order


def procrustes(cross: torch.Tensor) -> torch.Tensor:
    """The orthogonal R maximising ``tr(R^T M)`` for ``M = A^T B``, i.e. minimising ``||A R - B||``."""
    u, _, vh = torch.linalg.svd(cross)
    return u @ vh


def rope_procrustes(cross: torch.Tensor) -> torch.Tensor:
    """As :func:`procrustes`, restricted to one 2x2 rotation per RoPE pair ``(i, i + D/2)`` (which commutes
    with RoPE's rotation of the pair)."""
    d = cross.shape[0]
    half = d // 2
    i = torch.arange(half)
    j = i + half
    theta = torch.atan2(cross[j, i] - cross[i, j], cross[i, i] + cross[j, j])
    c, s = torch.cos(theta), torch.sin(theta)
    r = torch.zeros_like(cross)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


def group_rotations(gram: torch.Tensor, heads: int, groups: int, rope: bool) -> torch.Tensor:
    """``(H, D, D)`` rotations R_h taking each head's activations onto its group's first head:
    ``A_h R_h ~ A_ref``."""
    d = gram.shape[0] // heads
    blocks = gram.reshape(heads, d, heads, d)
    size = heads // groups
    fit = rope_procrustes if rope else procrustes
    out = torch.empty(heads, d, d, dtype=gram.dtype)
    for h in range(heads):
        ref = (h // size) * size
        out[h] = torch.eye(d, dtype=gram.dtype) if h == ref else fit(blocks[h, :, ref, :])
    return out


@torch.no_grad()
def permute_heads(attn: nn.Module, names: tuple[str, str, str, str], heads: int, order: list[int]) -> None:
    """Reorder the heads of one attention module: q/k/v rows (and biases), o input columns."""
    idx = torch.tensor(order)
    for name in names[:3]:
        lin = getattr(attn, name)
        lin.weight.data = _head_rows(lin.weight.data, heads)[idx].reshape(lin.weight.shape).contiguous()
        if lin.bias is not None:
            lin.bias.data = _head_rows(lin.bias.data, heads)[idx].reshape(lin.bias.shape).contiguous()
    o = getattr(attn, names[3])
    cols = _head_rows(o.weight.data.T, heads)[idx].reshape(o.weight.shape[1], -1)
    o.weight.data = cols.T.contiguous()


@torch.no_grad()
def rotate_heads(lin: nn.Linear, heads: int, rot: torch.Tensor) -> None:
    """Rows of head h become ``R_h^T W_h`` (outputs ``R_h^T x_h``), bias likewise."""
    r = rot.to(device=lin.weight.device, dtype=torch.float64)
    w = _head_rows(lin.weight.data.double(), heads)  # (H, D, d_in)
    lin.weight.data = torch.einsum("hde,hdi->hei", r, w).reshape(lin.weight.shape).to(lin.weight.dtype)
    if lin.bias is not None:
        b = _head_rows(lin.bias.data.double(), heads)
        lin.bias.data = torch.einsum("hde,hd->he", r, b).reshape(lin.bias.shape).to(lin.bias.dtype)


@torch.no_grad()
def rotate_output(o: nn.Linear, heads: int, rot: torch.Tensor) -> None:
    """Input columns of head h become ``W_o,h R_h`` (undoing the values' ``R_h^T``)."""
    r = rot.to(device=o.weight.device, dtype=torch.float64)
    w = o.weight.data.double().reshape(o.weight.shape[0], heads, -1)  # (d_out, H, D)
    o.weight.data = torch.einsum("ohd,hde->ohe", w, r).reshape(o.weight.shape).to(o.weight.dtype)


def permuted_gram(gram: torch.Tensor, heads: int, order: list[int]) -> torch.Tensor:
    d = gram.shape[0] // heads
    idx = torch.tensor(order)
    blocks = gram.reshape(heads, d, heads, d)[idx][:, :, idx]
    return blocks.reshape(gram.shape)


def prepare_heads(family, groups: int, method: str, stats: dict[int, tuple[torch.Tensor, torch.Tensor]]):
    """Permute and/or rotate every converted attention's heads for ``method`` (no pooling).

    Args:
        family: the model's :class:`~gqa_eval.variant.family.Family` (MHA: K/V heads = query heads).
        groups: G, the key/value heads pooling will make.
        method: one of :data:`CALIBRATED`.
        stats: ``{index of the attention in family.attentions(): (K Gram, V Gram)}``.

    Returns:
        ``{index: head order}`` of the permuted attentions (identity orders left out).
    """
    heads = family.n_heads
    names = (family.q_name, family.k_name, family.v_name, family.o_name)
    orders: dict[int, list[int]] = {}
    for i, attn in enumerate(family.attentions()):
        gram_k, gram_v = stats[i]
        if method.startswith("clustered"):
            sim = (cosine_similarity(gram_k, heads) + cosine_similarity(gram_v, heads)) / 2
            order = cluster_heads(sim, groups)
            if order != list(range(heads)):
                permute_heads(attn, names, heads, order)
                gram_k, gram_v = permuted_gram(gram_k, heads, order), permuted_gram(gram_v, heads, order)
                orders[i] = order
        if method.endswith("aligned"):
            rot_k = group_rotations(gram_k, heads, groups, rope=family.rope)
            rot_v = group_rotations(gram_v, heads, groups, rope=False)
            rotate_heads(getattr(attn, family.q_name), heads, rot_k)
            rotate_heads(getattr(attn, family.k_name), heads, rot_k)
            rotate_heads(getattr(attn, family.v_name), heads, rot_v)
            rotate_output(getattr(attn, family.o_name), heads, rot_v)
    return orders
