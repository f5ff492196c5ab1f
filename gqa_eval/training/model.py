"""Training stage, model side: build a model from a config, run T5 attention fast on CPU, and run a step
as a mean-pooled GQA conversion.

``pooled_kv`` gives the parameter overrides under which a forward pass is exactly that of the model's
mean-pooled GQA-G conversion (``gqa_eval.variant.conversion``, Ainslie et al. 2023, arXiv 2305.13245,
sec. 2.1), as a differentiable function of the MHA weights; ``pooling_for_step`` draws which G a training
step uses. ``lean_attention`` runs T5 through the grouped attention's training kernel
(``gqa_eval.variant.attention``, scores in the autocast dtype).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from omegaconf import DictConfig, OmegaConf

from gqa_eval.variant import family_of
from gqa_eval.variant.attention import TRAINING_ATTN_IMPLEMENTATION


def build_model(architecture: DictConfig, tokenizer) -> torch.nn.Module:
    """A freshly initialised ``architecture.family`` model (t5 or llama) sized by ``architecture.config``."""
    from transformers import LlamaConfig, LlamaForCausalLM, T5Config, T5ForConditionalGeneration

    families = {"t5": (T5Config, T5ForConditionalGeneration), "llama": (LlamaConfig, LlamaForCausalLM)}
    if architecture.family not in families:
        raise ValueError(
            f"unknown architecture.family {architecture.family!r}; choose one of {list(families)}"
        )
    config_cls, model_cls = families[architecture.family]
    special = {"pad_token_id": tokenizer.pad_token_id, "eos_token_id": tokenizer.eos_token_id}
    if architecture.family == "t5":
        special["decoder_start_token_id"] = tokenizer.pad_token_id
    else:
        special["bos_token_id"] = tokenizer.bos_token_id
    config = config_cls(vocab_size=len(tokenizer), **special, **OmegaConf.to_container(architecture.config))
    return model_cls(config)


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
