"""Training stage: T5's attention through the grouped attention's training kernel
(``gqa_t5_train`` of :mod:`gqa_eval.variant.attention`: scores in the bfloat16 autocast dtype, where SDPA
would fall back to a float32 mask per layer), for the forward passes of training only."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from gqa_eval.variant.attention import TRAINING_ATTN_IMPLEMENTATION


@contextmanager
def lean_attention(model: torch.nn.Module) -> Iterator[None]:
    """Route a T5 model's attention through the trainer's kernel (``gqa_t5_train`` of
    :mod:`gqa_eval.variant.attention`) for a forward pass (other families: no-op)."""
    stacks = [model.encoder, model.decoder] if model.config.model_type == "t5" else []
    saved = [stack.config._attn_implementation for stack in stacks]
    for stack in stacks:
        stack.config._attn_implementation = TRAINING_ATTN_IMPLEMENTATION
    try:
        yield
    finally:
        for stack, name in zip(stacks, saved, strict=True):
            stack.config._attn_implementation = name
