"""Training stage: run a step as a mean-pooled GQA conversion of the model being trained.

``pooled_kv`` gives the parameter overrides under which a forward pass is exactly that of the model's
mean-pooled GQA-G conversion (``gqa_eval.variant.conversion``, Ainslie et al. 2023, arXiv 2305.13245,
sec. 2.1), as a differentiable function of the MHA weights; ``pooling_for_step`` draws which G a training
step uses.
"""

from __future__ import annotations

import random

import torch

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
    overrides = {}
    for name, param in model.named_parameters():
        if id(param) in targets:
            heads = param.view(groups, kv_heads // groups, dim, *param.shape[1:])  # (G, H/G, D[, d_model])
            overrides[name] = heads.mean(dim=1, keepdim=True).expand_as(heads).reshape(param.shape)
    return overrides


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
