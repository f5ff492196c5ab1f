"""Variant stage: what every stage needs to know about a model's family, asked once and handed on.

A :class:`Family` wraps one loaded model and answers, from its config and modules, the questions the
conversion, the run stage, the roofline and the trainer would otherwise each ask again: how many query
and key/value heads the converted attention has, how wide a head is, which attention modules conversion
narrows and under which attribute names their K and V projections sit, which modules a decode step
reads, and how the KV cache is laid out. One subclass per family shape (``t5.py``, ``bart.py``,
``decoder.py``). A family known by name is a subclass registered for its ``model_type`` with
:func:`register`; a family known by its shape is found by a rule registered with :func:`register_rule`
(decoder-only models: whatever has ``num_key_value_heads`` and separate or fused projections), which
returns the family, or says why the model is not one.

Values are read from the model when asked, so a family made before a conversion answers for the
converted model afterwards.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import ClassVar

import torch
from torch import nn

from gqa_eval.variant.pooling import narrowed

FAMILIES: dict[str, type[Family]] = {}  # model_type -> Family subclass
Rule = Callable[[nn.Module], "Family | str"]
RULES: list[tuple[Rule, tuple[str, ...]]] = []  # (rule, the model_types its tests cover)


def register(cls: type[Family]) -> type[Family]:
    """Class decorator: make ``cls`` the family of each of its ``model_types``."""
    for model_type in cls.model_types:
        FAMILIES[model_type] = cls
    return cls


def register_rule(tested: tuple[str, ...]) -> Callable[[Rule], Rule]:
    """Decorator: ``rule(model)`` returns the :class:`Family` of a model not registered by name, or one
    line saying why the model is not of its shape. ``tested`` names the model types the tests convert
    through the rule (reported by :func:`supported`); the rule itself takes any model of its shape."""

    def add(rule: Rule) -> Rule:
        RULES.append((rule, tuple(tested)))
        return rule

    return add


class Family:
    """The shape of one model family as the other stages need it (override in subclasses)."""

    model_types: ClassVar[tuple[str, ...]] = ()
    encoder_decoder: ClassVar[bool] = False
    k_name: ClassVar[str] = "k_proj"  # attribute names of an attention module's K and V projections
    v_name: ClassVar[str] = "v_proj"
    q_name: ClassVar[str] = "q_proj"  # ... and of its query and output projections
    o_name: ClassVar[str] = "o_proj"
    rope: ClassVar[bool] = False  # queries and keys are rotated by RoPE (pairs (i, i + D/2))

    def __init__(self, model: nn.Module):
        self.model = model
        self.config = model.config

    @property
    def name(self) -> str:
        """The family name recorded in results (the config's ``model_type``)."""
        return self.config.model_type

    @property
    def n_heads(self) -> int:
        """Query heads of the attention conversion acts on."""
        raise NotImplementedError

    @property
    def kv_heads(self) -> int:
        """Key/value heads of that attention now."""
        raise NotImplementedError

    @property
    def head_dim(self) -> int:
        """Width of one attention head."""
        raise NotImplementedError

    @property
    def cache_layers(self) -> int:
        """Layers that keep a KV cache while decoding."""
        raise NotImplementedError

    @property
    def init_std(self) -> float:
        """Standard deviation of a freshly initialised K/V projection (conversion method ``random``)."""
        raise NotImplementedError

    def attentions(self) -> Iterator[nn.Module]:
        """The attention modules conversion narrows."""
        raise NotImplementedError

    def kv_projections(self) -> list[nn.Linear]:
        """Their K and V projections, in order (K then V per module)."""
        return [getattr(a, name) for a in self.attentions() for name in (self.k_name, self.v_name)]

    def alignment_refusal(self) -> str | None:
        """Why conversion ``aligned`` cannot rotate this model's heads exactly (None: it can)."""
        return None

    def reshape_refusal(self, method: str) -> str | None:
        """Why the calibrated ``method`` cannot reshape this model's heads exactly (None: it can)."""
        return self.alignment_refusal() if method.endswith("aligned") else None

    def conversion_refusal(self) -> str | None:
        """Why this model's K/V heads cannot be pooled at all (None: they can); asked before any change."""
        return None

    def editing(self) -> contextlib.AbstractContextManager:
        """A context within which :meth:`attentions` carry the projections conversion edits under the
        names ``q_name`` ... ``o_name`` and the model still runs (fused projections are split inside it
        and re-fused on leaving it); nothing to do for most families."""
        return contextlib.nullcontext()

    def pool_kv(self, kv_heads: int, method: str, generator: torch.Generator) -> None:
        """Narrow every converted attention's K and V projections to ``kv_heads`` heads by ``method``."""
        dim, std = self.head_dim, self.init_std
        for attn in self.attentions():
            for name in (self.k_name, self.v_name):
                setattr(attn, name, narrowed(getattr(attn, name), kv_heads, dim, method, generator, std))

    def record_head_orders(self, orders: dict[int, list[int]]) -> None:
        """After conversion ``clustered`` permuted the heads of attentions ``orders`` (index in
        :meth:`attentions` -> new head order), record what the family needs beyond the weights."""

    def set_kv_heads(self, kv_heads: int) -> None:
        """Record ``kv_heads`` on the config and modules once the projections are narrowed."""
        raise NotImplementedError

    def decode_modules(self) -> list[nn.Module]:
        """The modules a decode step runs (its embedding lookup reads only B rows and is left out)."""
        raise NotImplementedError

    def prefill_only_modules(self) -> list[nn.Module]:
        """Decoder modules that run once per batch, at prefill, and not at each decode step."""
        return []

    def cache_contexts(self, self_positions: float, source_positions: int) -> list[float]:
        """Positions each cache of a decoder layer holds at a decode step (self-attention first)."""
        return [self_positions]

    def kv_cache_bytes(self, dtype: torch.dtype) -> dict[str, int]:
        """KV-cache bytes per token from the geometry: layers x 2 (K and V) x kv_heads x head_dim x bytes."""
        per_layer = 2 * self.kv_heads * self.head_dim * torch.finfo(dtype).bits // 8
        return {"kv_cache_bytes_per_token": self.cache_layers * per_layer}


def supported() -> tuple[str, ...]:
    """The ``model_type`` names gqa-eval converts by name, encoder-decoder families first, then those the
    tests convert by rule (the rules take any model of their shape)."""
    named = sorted(FAMILIES, key=lambda name: not FAMILIES[name].encoder_decoder)
    by_rule = [t for _, tested in RULES for t in tested if t not in FAMILIES]
    return tuple(named + by_rule)


def family_of(model: nn.Module | Family) -> Family:
    """The :class:`Family` of ``model`` (a family is returned as it is).

    Raises:
        ValueError: the model's family is not one gqa-eval converts.
    """
    if isinstance(model, Family):
        return model
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type in FAMILIES:
        return FAMILIES[model_type](model)
    reasons = []
    for rule, _ in RULES:
        found = rule(model)
        if isinstance(found, Family):
            return found
        reasons.append(found)
    raise ValueError(
        f"unsupported architecture {model_type or type(model).__name__!r}: gqa-eval converts "
        f"{', '.join(supported())} checkpoints, and by rule any decoder-only model whose config has "
        "num_key_value_heads and whose attention has k_proj/v_proj or qkv_proj"
        + "".join(f"; {reason}" for reason in reasons)
    )


def architecture(model: nn.Module) -> str:
    """The family name of ``model`` (``family_of(model).name``)."""
    return family_of(model).name


def attention_heads(model: nn.Module) -> tuple[int, int]:
    """``(n_heads, kv_heads)`` of the attention conversion acts on (T5: the decoder)."""
    family = family_of(model)
    return family.n_heads, family.kv_heads


def head_dim(model: nn.Module) -> int:
    """Width of one attention head (``family_of(model).head_dim``)."""
    return family_of(model).head_dim
