"""Variant stage, BART-like encoder-decoder families: BART, mBART, Pegasus and Marian.

As for T5, the paper's conversion is applied to the decoder's self- and cross-attention and the encoder
keeps multi-head attention (Ainslie et al. 2023, arXiv 2305.13245, sec. 3.1). The four share one
attention module (``BartAttention`` and its copies): ``q_proj``/``k_proj``/``v_proj``/``out_proj``, all
with biases, keys and values reshaped with ``view(..., -1, head_dim)``, queries scaled by
``head_dim**-0.5`` through the ``scaling`` it hands to the attention function that
``config._attn_implementation`` names. So once ``k_proj`` and ``v_proj`` are narrowed (weights and
biases pooled, :func:`gqa_eval.variant.pooling.narrowed`) the keys, values and both caches of
``EncoderDecoderCache`` hold G heads, and the grouped attention ``gqa_t5``
(:mod:`gqa_eval.variant.attention`) attends the H query heads to them.

Their encoder and decoder share ONE config object, so routing the decoder through ``gqa_t5`` routes the
encoder too; there H == G, which ``gqa_t5`` hands unchanged to transformers' SDPA function, with the
masks SDPA's own mask function makes: the encoder computes exactly what it did under ``sdpa``.

A saved grouped checkpoint (``config.num_key_value_heads`` < ``decoder_attention_heads``) is rebuilt by
the ``*GQA*`` classes here (:func:`grouped_class`), which narrow the decoder's K/V projections after
construction; :func:`gqa_eval.variant.checkpoints.model_class` picks them.
"""

from __future__ import annotations

from collections.abc import Iterator

from torch import nn
from transformers import (
    BartForConditionalGeneration,
    MarianMTModel,
    MBartForConditionalGeneration,
    PegasusForConditionalGeneration,
)

from gqa_eval.variant.attention import ATTN_IMPLEMENTATION
from gqa_eval.variant.family import Family, register
from gqa_eval.variant.pooling import check_kv_heads

BASE_CLASSES = {
    "bart": BartForConditionalGeneration,
    "mbart": MBartForConditionalGeneration,
    "pegasus": PegasusForConditionalGeneration,
    "marian": MarianMTModel,
}


def bart_decoder_attentions(model: nn.Module) -> Iterator[nn.Module]:
    """The decoder's self- and cross-attention modules, layer by layer (self first)."""
    for layer in model.model.decoder.layers:
        yield layer.self_attn
        yield layer.encoder_attn


def bart_kv_heads(config) -> int:
    """Key/value heads of the decoder's attention (``decoder_attention_heads`` until converted)."""
    return getattr(config, "num_key_value_heads", None) or config.decoder_attention_heads


def set_bart_kv_heads(model: nn.Module, kv_heads: int) -> None:
    """Record ``kv_heads`` on the (shared) config and route attention through the grouped function."""
    model.config.num_key_value_heads = kv_heads
    model.config._attn_implementation = ATTN_IMPLEMENTATION


@register
class BartFamily(Family):
    """BART, mBART, Pegasus, Marian: decoder self- and cross-attention converted, encoder untouched.

    A decode step reads the decoder's self-attention cache (one position per generated token) and its
    cross-attention cache (one per source token); the cross-attention K/V projections run once, at
    prefill, on the encoder output.
    """

    model_types = tuple(BASE_CLASSES)
    encoder_decoder = True
    o_name = "out_proj"

    @property
    def n_heads(self) -> int:
        return self.config.decoder_attention_heads

    @property
    def kv_heads(self) -> int:
        return bart_kv_heads(self.config)

    @property
    def head_dim(self) -> int:
        return self.config.d_model // self.config.decoder_attention_heads

    @property
    def cache_layers(self) -> int:
        return self.config.decoder_layers

    @property
    def init_std(self) -> float:
        return self.config.init_std

    def attentions(self) -> Iterator[nn.Module]:
        return bart_decoder_attentions(self.model)

    def set_kv_heads(self, kv_heads: int) -> None:
        set_bart_kv_heads(self.model, kv_heads)

    def decode_modules(self) -> list[nn.Module]:
        decoder = self.model.model.decoder
        # the token and position embeddings are lookups of B rows; the layers, the embedding and final
        # layer norms (those a family has) and the LM head run in full
        lookups = ("embed_tokens", "embed_positions")
        return [m for name, m in decoder.named_children() if name not in lookups] + [self.model.lm_head]

    def prefill_only_modules(self) -> list[nn.Module]:
        attentions = [layer.encoder_attn for layer in self.model.model.decoder.layers]
        return [proj for attn in attentions for proj in (attn.k_proj, attn.v_proj)]

    def cache_contexts(self, self_positions: float, source_positions: int) -> list[float]:
        return [self_positions, source_positions]

    def kv_cache_bytes(self, dtype) -> dict[str, int]:
        per_token = super().kv_cache_bytes(dtype)["kv_cache_bytes_per_token"]
        return {"kv_cache_bytes_per_token": per_token, "cross_kv_cache_bytes_per_source_token": per_token}


def grouped_class(base: type, name: str) -> type:
    """The subclass ``name`` of ``base`` (a BART-like seq2seq class) whose decoder has
    ``config.num_key_value_heads`` key/value heads: it reloads a saved grouped checkpoint, which
    ``base.from_pretrained`` cannot size (its decoder K/V projections are narrowed after construction)."""

    def __init__(self, config):
        base.__init__(self, config)
        heads = config.decoder_attention_heads
        kv_heads = bart_kv_heads(config)
        check_kv_heads(heads, heads, kv_heads)
        if kv_heads != heads:
            width = kv_heads * (config.d_model // heads)
            for attn in bart_decoder_attentions(self):
                for proj in ("k_proj", "v_proj"):
                    old = getattr(attn, proj)
                    setattr(attn, proj, nn.Linear(old.in_features, width, bias=old.bias is not None))
        set_bart_kv_heads(self, kv_heads)
        self.post_init()

    doc = f"{base.__name__} with ``config.num_key_value_heads`` decoder K/V heads (reloads GQA checkpoints)."
    return type(name, (base,), {"__init__": __init__, "__module__": __name__, "__doc__": doc})


BartGQAForConditionalGeneration = grouped_class(
    BartForConditionalGeneration, "BartGQAForConditionalGeneration"
)
MBartGQAForConditionalGeneration = grouped_class(
    MBartForConditionalGeneration, "MBartGQAForConditionalGeneration"
)
PegasusGQAForConditionalGeneration = grouped_class(
    PegasusForConditionalGeneration, "PegasusGQAForConditionalGeneration"
)
MarianGQAMTModel = grouped_class(MarianMTModel, "MarianGQAMTModel")
GROUPED_CLASSES = {  # model_type -> the class that reloads its grouped checkpoints (checkpoints.model_class)
    "bart": BartGQAForConditionalGeneration,
    "mbart": MBartGQAForConditionalGeneration,
    "pegasus": PegasusGQAForConditionalGeneration,
    "marian": MarianGQAMTModel,
}
