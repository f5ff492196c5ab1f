"""Variant stage, saved checkpoints: the modelling file a saved T5 / BART-like GQA checkpoint carries.

:func:`gqa_eval.variant.loadable.write_loadable_files` copies this module verbatim into a saved checkpoint
as ``modeling_gqa.py`` and points ``config.json``'s ``auto_map`` at its classes, so anyone can load the
checkpoint with plain transformers, ``AutoModelForSeq2SeqLM.from_pretrained(path, trust_remote_code=True)``,
without gqa-eval installed. It must therefore import nothing but torch and transformers. gqa-eval itself
never runs it: :func:`gqa_eval.variant.checkpoints.load_checkpoint` reloads with its own classes.

The classes rebuild what gqa-eval's conversion made (Ainslie et al. 2023, arXiv 2305.13245, sec. 3.1):
the decoder's self- and cross-attention with ``config.num_key_value_heads`` (G) key/value heads for its
H query heads, the encoder left multi-head. Attention is computed plainly, by repeating each K/V head
to the H/G query heads of its group (head h reads group h // (H/G)) and running transformers' SDPA
function on H heads: it gives the logits gqa-eval's grouped attention gives, not its speed or its small
KV cache. T5 layers whose heads a ``clustered`` conversion permuted read the shared relative position
bias in their own head order (``config.gqa_bias_head_order``).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import (
    AttentionInterface,
    BartForConditionalGeneration,
    MarianMTModel,
    MBartForConditionalGeneration,
    PegasusForConditionalGeneration,
    T5ForConditionalGeneration,
)
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

ATTN_IMPLEMENTATION = "gqa_repeat_kv"


def _bias_in_head_order(module: nn.Module, bias: torch.Tensor | None) -> torch.Tensor | None:
    """The shared relative bias ``(B', H, T, S)`` in this layer's head order (None order: unchanged)."""
    order = getattr(module, "gqa_bias_head_order", None)
    if order is None or bias is None or bias.dim() != 4 or bias.shape[1] != len(order):
        return bias
    return bias.index_select(1, torch.tensor(order, device=bias.device))


def repeat_kv_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    position_bias: torch.Tensor | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """``AttentionInterface`` entry: H query heads ``(B, H, T, D)`` over G key/value heads ``(B, G, S, D)``.

    Each K/V head is repeated to the H/G query heads of its group, then transformers' SDPA function runs
    as on a multi-head model (H == G, the encoders, passes through unchanged).
    """
    h, g = query.shape[1], key.shape[1]
    if h % g:
        raise ValueError(f"{h} query heads cannot share {g} key/value heads: {g} must divide {h}")
    if g != h:
        key = key.repeat_interleave(h // g, dim=1)  # (B, G, S, D) -> (B, H, S, D)
        value = value.repeat_interleave(h // g, dim=1)
    position_bias = _bias_in_head_order(module, position_bias)
    return sdpa_attention_forward(
        module, query, key, value, attention_mask, position_bias=position_bias, **kwargs
    )


AttentionInterface.register(ATTN_IMPLEMENTATION, repeat_kv_attention_forward)
AttentionMaskInterface.register(ATTN_IMPLEMENTATION, sdpa_mask)


def _narrow_kv(attentions, names: tuple[str, str], width: int) -> None:
    """Replace each attention's K/V projections by ones with ``width`` outputs (G heads), biases kept."""
    for attn in attentions:
        for name in names:
            old = getattr(attn, name)
            setattr(attn, name, nn.Linear(old.in_features, width, bias=old.bias is not None))


def _check_kv_heads(heads: int, kv_heads: int) -> None:
    if kv_heads < 1 or heads % kv_heads:
        raise ValueError(
            f"num_key_value_heads={kv_heads} must be a divisor of the {heads} decoder attention heads"
        )


class T5GQAForConditionalGeneration(T5ForConditionalGeneration):
    """T5 whose decoder self- and cross-attention have ``config.num_key_value_heads`` K/V heads."""

    def __init__(self, config):
        super().__init__(config)
        heads = config.num_heads
        kv_heads = getattr(config, "num_key_value_heads", None) or heads
        _check_kv_heads(heads, kv_heads)
        blocks = list(self.decoder.block)
        attentions = [a for b in blocks for a in (b.layer[0].SelfAttention, b.layer[1].EncDecAttention)]
        if kv_heads != heads:
            _narrow_kv(attentions, ("k", "v"), kv_heads * config.d_kv)
        orders = getattr(config, "gqa_bias_head_order", None) or [None] * len(blocks)
        for block, order in zip(blocks, orders, strict=True):
            block.layer[0].SelfAttention.gqa_bias_head_order = None if order is None else list(order)
        self.decoder.config._attn_implementation = ATTN_IMPLEMENTATION  # T5's decoder has its own config
        self.post_init()


def _group_bart_decoder(model: nn.Module, config) -> None:
    """Narrow a BART-like decoder's K/V projections to ``config.num_key_value_heads`` heads and route its
    attention here (encoder and decoder share one config; the encoder, H == G, is unchanged)."""
    heads = config.decoder_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    _check_kv_heads(heads, kv_heads)
    if kv_heads != heads:
        layers = model.model.decoder.layers
        attentions = [attn for layer in layers for attn in (layer.self_attn, layer.encoder_attn)]
        _narrow_kv(attentions, ("k_proj", "v_proj"), kv_heads * (config.d_model // heads))
    model.config._attn_implementation = ATTN_IMPLEMENTATION


class BartGQAForConditionalGeneration(BartForConditionalGeneration):
    """BART with ``config.num_key_value_heads`` decoder K/V heads."""

    def __init__(self, config):
        super().__init__(config)
        _group_bart_decoder(self, config)
        self.post_init()


class MBartGQAForConditionalGeneration(MBartForConditionalGeneration):
    """mBART with ``config.num_key_value_heads`` decoder K/V heads."""

    def __init__(self, config):
        super().__init__(config)
        _group_bart_decoder(self, config)
        self.post_init()


class PegasusGQAForConditionalGeneration(PegasusForConditionalGeneration):
    """Pegasus with ``config.num_key_value_heads`` decoder K/V heads."""

    def __init__(self, config):
        super().__init__(config)
        _group_bart_decoder(self, config)
        self.post_init()


class MarianGQAMTModel(MarianMTModel):
    """Marian with ``config.num_key_value_heads`` decoder K/V heads."""

    def __init__(self, config):
        super().__init__(config)
        _group_bart_decoder(self, config)
        self.post_init()


CLASSES = {  # model_type -> the class config.json's auto_map names for AutoModelForSeq2SeqLM
    "t5": T5GQAForConditionalGeneration,
    "bart": BartGQAForConditionalGeneration,
    "mbart": MBartGQAForConditionalGeneration,
    "pegasus": PegasusGQAForConditionalGeneration,
    "marian": MarianGQAMTModel,
}
