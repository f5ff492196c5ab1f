"""Variant stage: the conversion methods, acting on one K or V projection at a time.

Ainslie et al. 2023 (arXiv 2305.13245, sec. 2.1): "the key and value projection matrices of all heads
in a group are mean-pooled into a single head". Groups are contiguous (head h belongs to group
h // (H/G)), the grouping of torch's ``enable_gqa`` and transformers' ``repeat_kv``. Methods (the
paper's conversion ablation, Fig. 4): ``mean`` pools each group, ``first`` keeps the first head of each
group, ``random`` initialises the G heads afresh.
"""

from __future__ import annotations

import torch
from torch import nn

METHODS = ("mean", "first", "random", "aligned", "clustered", "clustered_aligned")
# aligned / clustered / clustered_aligned reshape the heads first (gqa_eval.variant.heads), then pool by mean


def check_method(method: str) -> None:
    """Raise ``ValueError`` unless ``method`` is one of :data:`METHODS`."""
    if method not in METHODS:
        raise ValueError(f"unknown conversion method {method!r}; choose one of {', '.join(METHODS)}")


def check_kv_heads(n_heads: int, current_kv_heads: int, kv_heads: int) -> None:
    """Raise ``ValueError`` unless ``kv_heads`` groups can be made from ``current_kv_heads`` heads."""
    if not isinstance(kv_heads, int) or isinstance(kv_heads, bool) or kv_heads < 1:
        raise ValueError(f"kv_heads must be a positive integer, got {kv_heads!r}")
    if kv_heads > current_kv_heads:
        raise ValueError(
            f"kv_heads={kv_heads} is larger than the model's {current_kv_heads} key/value heads "
            f"({n_heads} query heads); choose a divisor of {current_kv_heads}"
        )
    if current_kv_heads % kv_heads:
        divisors = [d for d in range(1, current_kv_heads + 1) if current_kv_heads % d == 0]
        raise ValueError(
            f"kv_heads={kv_heads} does not divide the model's {current_kv_heads} key/value heads "
            f"({n_heads} query heads); choose one of {divisors}"
        )


def pool_heads(
    weight: torch.Tensor,
    kv_heads: int,
    head_dim: int,
    method: str = "mean",
    generator: torch.Generator | None = None,
    init_std: float = 0.02,
) -> torch.Tensor:
    """Pool the heads of a K or V projection into ``kv_heads`` contiguous groups.

    Args:
        weight: ``(n * head_dim, d_in)`` projection weight or ``(n * head_dim,)`` bias, n heads.
        kv_heads: number of groups G; must divide n.
        head_dim: width of one head.
        method: ``mean``, ``first`` or ``random``.
        generator: random source for ``random``.
        init_std: standard deviation for ``random``.

    Returns:
        ``(G * head_dim, d_in)`` (or ``(G * head_dim,)``) in ``weight``'s dtype and device.
    """
    n = weight.shape[0] // head_dim
    grouped = weight.reshape(kv_heads, n // kv_heads, head_dim, *weight.shape[1:])  # (G, n/G, D, ...)
    if method == "mean" or method in ("aligned", "clustered", "clustered_aligned"):
        # Accumulate in float32: bf16 means of many heads lose precision.
        pooled = grouped.float().mean(dim=1).to(weight.dtype)
    elif method == "first":
        pooled = grouped[:, 0].clone()
    elif method == "random":
        shape = (kv_heads, head_dim, *weight.shape[1:])
        pooled = torch.empty(shape, dtype=torch.float32).normal_(0.0, init_std, generator=generator)
        if weight.dim() == 1:
            pooled.zero_()
        pooled = pooled.to(device=weight.device, dtype=weight.dtype)
    else:
        check_method(method)
    return pooled.reshape(kv_heads * head_dim, *weight.shape[1:])


def narrowed(linear: nn.Linear, kv_heads: int, head_dim: int, method: str, gen, std: float) -> nn.Linear:
    """A new Linear with ``kv_heads`` output heads, pooled from ``linear``."""
    weight = pool_heads(linear.weight.data, kv_heads, head_dim, method, gen, std)
    out = nn.Linear(
        linear.in_features,
        weight.shape[0],
        bias=linear.bias is not None,
        device=weight.device,
        dtype=weight.dtype,
    )
    out.weight.data = weight
    if linear.bias is not None:
        out.bias.data = pool_heads(linear.bias.data, kv_heads, head_dim, method, gen, std)
    out.weight.requires_grad_(linear.weight.requires_grad)
    return out
