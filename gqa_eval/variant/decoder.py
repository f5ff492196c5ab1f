"""Variant stage, decoder-only families: Llama, Mistral, Qwen2, Qwen3.

Their attention modules carry ``k_proj`` / ``v_proj`` and ``num_key_value_groups``, and their configs
``num_key_value_heads``, so a converted checkpoint is an ordinary transformers model with
``num_key_value_heads = G`` that transformers' own attention (``repeat_kv`` / SDPA ``enable_gqa``) runs.
"""

from __future__ import annotations

from collections.abc import Iterator

from torch import nn

from gqa_eval.variant.family import Family, register


@register
class DecoderFamily(Family):
    """A decoder-only causal LM with separate q/k/v projections: one cache that grows with the prompt
    and the output alike; every K/V projection runs at each decode step."""

    model_types = ("llama", "mistral", "qwen2", "qwen3")
    rope = True

    def alignment_refusal(self) -> str | None:
        attn = next(self.attentions())
        if hasattr(attn, "q_norm") or hasattr(attn, "k_norm"):
            return (
                f"conversion=aligned cannot rotate {self.name} heads exactly: its per-head q_norm/k_norm "
                "scales each dimension, which no rotation commutes with; use mean or clustered"
            )
        return None

    @property
    def n_heads(self) -> int:
        return self.config.num_attention_heads

    @property
    def kv_heads(self) -> int:
        return self.config.num_key_value_heads

    @property
    def head_dim(self) -> int:
        return getattr(self.config, "head_dim", None) or self.config.hidden_size // self.n_heads

    @property
    def cache_layers(self) -> int:
        return self.config.num_hidden_layers

    @property
    def init_std(self) -> float:
        return self.config.initializer_range

    def attentions(self) -> Iterator[nn.Module]:
        for layer in self.model.model.layers:
            yield layer.self_attn

    def set_kv_heads(self, kv_heads: int) -> None:
        for attn in self.attentions():
            attn.num_key_value_groups = self.n_heads // kv_heads
        self.config.num_key_value_heads = kv_heads

    def decode_modules(self) -> list[nn.Module]:
        inner = self.model.model
        return [inner.layers, inner.norm, self.model.lm_head]
