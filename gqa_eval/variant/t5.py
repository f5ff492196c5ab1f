"""Variant stage, T5 family: where T5 keeps its attention, and the class that reloads a grouped T5.

For T5 the paper converts decoder self- and cross-attention only; the encoder keeps multi-head attention
(Ainslie et al. 2023, arXiv 2305.13245, sec. 3.1). transformers' ``T5Attention`` names its projections
``q``/``k``/``v``/``o``; once ``k`` and ``v`` are narrowed the decoder runs through the grouped attention
of :mod:`gqa_eval.variant.attention`.
"""

from __future__ import annotations

from collections.abc import Iterator

from torch import nn
from transformers import T5Config, T5ForConditionalGeneration

from gqa_eval.variant.attention import ATTN_IMPLEMENTATION
from gqa_eval.variant.family import Family, register
from gqa_eval.variant.pooling import check_kv_heads


def t5_decoder_attentions(model: T5ForConditionalGeneration) -> Iterator[nn.Module]:
    """The decoder's self- and cross-attention modules (the ones the paper converts)."""
    for block in model.decoder.block:
        for layer in block.layer:
            for name in ("SelfAttention", "EncDecAttention"):
                if hasattr(layer, name):
                    yield getattr(layer, name)


def set_t5_kv_heads(model: T5ForConditionalGeneration, kv_heads: int) -> None:
    """Record ``kv_heads`` on a T5 config and route its decoder through the grouped attention."""
    model.config.num_key_value_heads = kv_heads
    model.decoder.config.num_key_value_heads = kv_heads
    model.decoder.config._attn_implementation = ATTN_IMPLEMENTATION


def set_bias_orders(model: T5ForConditionalGeneration, orders: list[list[int] | None]) -> None:
    """Give decoder layer b's self-attention the head order ``orders[b]`` of its relative position bias.

    T5 computes the bias once, in the first decoder layer, in the original head order, and hands it to
    every layer; a layer whose heads were permuted (conversion ``clustered``) must read it permuted the same
    way. The order is recorded on the config (``gqa_bias_head_order``, one entry per decoder layer, None
    for unpermuted ones), so a saved checkpoint reloaded by :class:`T5GQAForConditionalGeneration` gets
    it back, and on each self-attention module, where the ``gqa_t5`` attention function applies it.
    """
    blocks = list(model.decoder.block)
    if len(orders) != len(blocks):
        raise ValueError(f"gqa_bias_head_order has {len(orders)} entries for {len(blocks)} decoder layers")
    for block, order in zip(blocks, orders, strict=True):
        attn = block.layer[0].SelfAttention
        attn.gqa_bias_head_order = None if order is None else tuple(int(h) for h in order)
        attn._gqa_bias_index = None
    recorded = None if all(o is None for o in orders) else [None if o is None else list(o) for o in orders]
    model.config.gqa_bias_head_order = recorded
    model.decoder.config.gqa_bias_head_order = recorded


def bias_orders(model: T5ForConditionalGeneration) -> list[list[int] | None]:
    """The decoder layers' bias head orders now (None: original order)."""
    return [getattr(b.layer[0].SelfAttention, "gqa_bias_head_order", None) for b in model.decoder.block]


@register
class T5Family(Family):
    """T5 (and T5 v1.1 / Flan-T5): decoder self- and cross-attention converted, encoder untouched.

    A decode step reads the decoder's self-attention cache (one position per generated token) and its
    cross-attention cache (one per source token); the cross-attention K/V projections run once, at
    prefill, on the encoder output.
    """

    model_types = ("t5",)
    encoder_decoder = True
    k_name, v_name, q_name, o_name = "k", "v", "q", "o"

    @property
    def n_heads(self) -> int:
        return self.config.num_heads

    @property
    def kv_heads(self) -> int:
        return getattr(self.config, "num_key_value_heads", None) or self.config.num_heads

    @property
    def head_dim(self) -> int:
        return self.config.d_kv

    @property
    def cache_layers(self) -> int:
        return self.config.num_decoder_layers or self.config.num_layers

    @property
    def init_std(self) -> float:
        return self.config.initializer_factor * self.config.d_model**-0.5

    def attentions(self) -> Iterator[nn.Module]:
        return t5_decoder_attentions(self.model)

    def set_kv_heads(self, kv_heads: int) -> None:
        set_t5_kv_heads(self.model, kv_heads)

    def record_head_orders(self, orders: dict[int, list[int]]) -> None:
        """Make each permuted self-attention read the shared relative bias in its new head order."""
        current = bias_orders(self.model)
        index = {id(a): i for i, a in enumerate(self.attentions())}
        for b, block in enumerate(self.model.decoder.block):
            order = orders.get(index[id(block.layer[0].SelfAttention)])
            if order is not None:
                old = current[b]
                current[b] = [old[h] for h in order] if old is not None else list(order)
        set_bias_orders(self.model, current)

    def decode_modules(self) -> list[nn.Module]:
        decoder = self.model.decoder
        return [decoder.block, decoder.final_layer_norm, self.model.lm_head]

    def prefill_only_modules(self) -> list[nn.Module]:
        attentions = [block.layer[1].EncDecAttention for block in self.model.decoder.block]
        return [proj for attn in attentions for proj in (attn.k, attn.v)]

    def cache_contexts(self, self_positions: float, source_positions: int) -> list[float]:
        return [self_positions, source_positions]

    def kv_cache_bytes(self, dtype) -> dict[str, int]:
        per_token = super().kv_cache_bytes(dtype)["kv_cache_bytes_per_token"]
        return {"kv_cache_bytes_per_token": per_token, "cross_kv_cache_bytes_per_source_token": per_token}


class T5GQAForConditionalGeneration(T5ForConditionalGeneration):
    """T5 whose decoder has ``config.num_key_value_heads`` key/value heads: the class that reloads a saved
    T5 GQA checkpoint, which plain ``T5ForConditionalGeneration.from_pretrained`` cannot size."""

    def __init__(self, config: T5Config):
        super().__init__(config)
        kv_heads = getattr(config, "num_key_value_heads", None) or config.num_heads
        check_kv_heads(config.num_heads, config.num_heads, kv_heads)
        if kv_heads != config.num_heads:
            for attn in t5_decoder_attentions(self):
                attn.k = nn.Linear(config.d_model, kv_heads * config.d_kv, bias=False)
                attn.v = nn.Linear(config.d_model, kv_heads * config.d_kv, bias=False)
        set_t5_kv_heads(self, kv_heads)
        orders = getattr(config, "gqa_bias_head_order", None)
        if orders:
            set_bias_orders(self, orders)
        self.post_init()
