"""Training stage: run a step as a mean-pooled GQA conversion of the model being trained.

``pooled_projections`` runs the model, for as long as it is entered, as its mean-pooled GQA-G conversion
(``gqa_eval.variant.conversion``, Ainslie et al. 2023, arXiv 2305.13245, sec. 2.1): each K/V projection
computes with its group-mean weights, a differentiable function of the MHA weights. It changes the
projections' ``forward`` and nothing else, so the model is still called through whatever wraps it (DDP's
gradient all-reduce, FSDP's unsharding) and an activation-checkpointed recomputation in the backward pass
sees the same pooled weights. ``pooled_kv`` gives the same pooled weights as parameter overrides (for
``torch.func.functional_call``); ``pooling_for_step`` draws which G a training step uses.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F

from gqa_eval.variant import family_of


def pooled_kv(model: torch.nn.Module, groups: int) -> dict[str, torch.Tensor]:
    """Parameter overrides that run ``model`` as its mean-pooled GQA-``groups`` conversion would.

    Each converted K/V projection's weight, and its bias where it has one (Qwen2, BART-like), is replaced
    by its contiguous group means, repeated back to the H heads (the same function as ``convert_to_gqa``
    followed by grouped attention), as a differentiable function of the MHA weights, so a training step
    through it updates the distinct heads.
    """
    family = family_of(model)
    kv_heads, dim = family.kv_heads, family.head_dim
    targets = {id(p) for proj in family.kv_projections() for p in (proj.weight, proj.bias) if p is not None}
    return {
        name: group_means(param, groups, kv_heads, dim)
        for name, param in model.named_parameters()
        if id(param) in targets
    }


def group_means(param: torch.Tensor, groups: int, kv_heads: int, head_dim: int) -> torch.Tensor:
    """A K/V projection's weight (or bias) with each group of ``kv_heads // groups`` heads replaced by
    their mean, repeated back to the ``kv_heads`` heads (rows ``head * head_dim`` onwards are a head)."""
    heads = param.view(groups, kv_heads // groups, head_dim, *param.shape[1:])  # (G, H/G, D[, d_model])
    return heads.mean(dim=1, keepdim=True).expand_as(heads).reshape(param.shape)


@contextmanager
def pooled_projections(model: torch.nn.Module, groups: int) -> Iterator[None]:
    """Inside, ``model`` (the unwrapped module) computes as its mean-pooled GQA-``groups`` conversion:
    each K/V projection applies :func:`group_means` of its weight and bias. Forward passes through a
    wrapper of ``model`` (DDP, FSDP) see it too; so does a backward pass inside (activation
    checkpointing recomputes under the same pooled weights). The projections are restored on exit."""
    family = family_of(model)
    kv_heads, dim = family.kv_heads, family.head_dim
    projections = family.kv_projections()
    for proj in projections:
        if not isinstance(proj, torch.nn.Linear):
            raise ValueError(
                f"pool_kv: {family.name}'s K/V projections are {type(proj).__name__}, not nn.Linear; "
                "train it without pool_kv"
            )

    def pooled_forward(proj: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
        bias = None if proj.bias is None else group_means(proj.bias, groups, kv_heads, dim)
        return F.linear(x, group_means(proj.weight, groups, kv_heads, dim), bias)

    try:
        for proj in projections:
            proj.forward = pooled_forward.__get__(proj)  # this instance only; the class is untouched
        yield
    finally:
        for proj in projections:
            proj.__dict__.pop("forward", None)


def pooling_for_step(pool_kv: dict[int, float] | None, seed: int, step: int, start: int = 0) -> int | None:
    """The G a training step pools K/V heads to (``None``: plain MHA), drawn with ``pool_kv``'s probabilities
    from a generator seeded by (seed, step), so a resumed run draws what an uninterrupted one would. Steps
    before ``start`` are plain MHA: pooled steps from the start keep cross-attention from forming at all."""
    if not pool_kv or step < start:
        return None
    draw = random.Random(f"pool/{seed}/{step}").random()
    for groups, probability in sorted(pool_kv.items()):
        if draw < probability:
            return int(groups)
        draw -= probability
    return None
