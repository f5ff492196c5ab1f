"""Training stage, model side: build a model from a config, run T5 attention fast on CPU, and run a step
as a mean-pooled GQA conversion.

``pooled_kv`` gives the parameter overrides under which a forward pass is exactly that of the model's
mean-pooled GQA-G conversion (``gqa_eval.convert``, Ainslie et al. 2023, arXiv 2305.13245, sec. 2.1), as a
differentiable function of the MHA weights; ``pooling_for_step`` draws which G a training step uses.
``lean_t5_attention`` is a T5 attention function for training only (registered in transformers'
``AttentionInterface``); evaluation keeps the project's own (``gqa_eval.attention``).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from omegaconf import DictConfig, OmegaConf
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from gqa_eval.convert import attention_heads, head_dim, t5_decoder_attentions

LEAN_ATTENTION = "gqa_eval_train_t5"


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


def lean_t5_attention(
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
    """T5 attention for training on CPU, H query heads over G <= H key/value heads.

    T5's relative position bias is learned, so SDPA cannot use its fused kernels and falls back to a
    float32 ``(B, H, T, S)`` mask per layer; here the scores stay in the autocast dtype, which halves a
    long-document training step. Same result as SDPA (see tests/test_train.py).
    """
    b, h, t, d = query.shape
    g, s = key.shape[1], key.shape[2]
    q = query.reshape(b, g, (h // g) * t, d)  # (B, H, T, D) -> (B, G, r*T, D), contiguous groups
    scores = torch.matmul(q, key.transpose(-1, -2)).view(b, h, t, s)  # (B, H, T, S)
    if scaling is not None and scaling != 1.0:
        scores = scores * scaling
    if position_bias is not None:
        scores = scores + position_bias.to(scores.dtype)
    if attention_mask is None and t > 1 and getattr(module, "is_causal", False):
        # SDPA's mask function leaves causality to is_causal when it can; spell it out
        attention_mask = torch.ones(t, s, dtype=torch.bool, device=query.device).tril(diagonal=s - t)
    if attention_mask is not None and attention_mask.dtype == torch.bool:
        scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
    elif attention_mask is not None:
        scores = scores + attention_mask.to(scores.dtype)
    probs = torch.nn.functional.dropout(torch.softmax(scores, dim=-1), p=dropout, training=dropout > 0)
    out = torch.matmul(probs.view(b, g, (h // g) * t, s), value)  # (B, G, r*T, D)
    return out.view(b, h, t, d).transpose(1, 2), None  # (B, T, H, D)


AttentionInterface.register(LEAN_ATTENTION, lean_t5_attention)
AttentionMaskInterface.register(LEAN_ATTENTION, sdpa_mask)


@contextmanager
def lean_attention(model: torch.nn.Module) -> Iterator[None]:
    """Route a T5 model's attention through ``lean_t5_attention`` for a forward pass (others: no-op)."""
    stacks = [model.encoder, model.decoder] if model.config.model_type == "t5" else []
    saved = [stack.config._attn_implementation for stack in stacks]
    for stack in stacks:
        stack.config._attn_implementation = LEAN_ATTENTION
    try:
        yield
    finally:
        for stack, name in zip(stacks, saved, strict=True):
            stack.config._attn_implementation = name


def converted_projections(model: torch.nn.Module) -> list[torch.Tensor]:
    """The K and V projection weights that GQA conversion pools (T5: decoder self- and cross-attention)."""
    if model.config.model_type == "t5":
        attentions = list(t5_decoder_attentions(model))
        return [w for a in attentions for w in (a.k.weight, a.v.weight)]
    return [
        w
        for layer in model.model.layers
        for w in (layer.self_attn.k_proj.weight, layer.self_attn.v_proj.weight)
    ]


def pooled_kv(model: torch.nn.Module, groups: int) -> dict[str, torch.Tensor]:
    """Parameter overrides that run ``model`` as its mean-pooled GQA-``groups`` conversion would.

    Each converted K/V projection is replaced by its contiguous group means, repeated back to the H heads
    (the same function as ``convert_to_gqa`` followed by grouped attention), as a differentiable function
    of the MHA weights, so a training step through it updates the distinct heads.
    """
    _, kv_heads = attention_heads(model)
    dim = head_dim(model)
    targets = {id(w) for w in converted_projections(model)}
    overrides = {}
    for name, weight in model.named_parameters():
        if id(weight) in targets:
            heads = weight.view(groups, kv_heads // groups, dim, -1)  # (G, H/G, D, d_model)
            overrides[name] = heads.mean(dim=1, keepdim=True).expand_as(heads).reshape(weight.shape)
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
