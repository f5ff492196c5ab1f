"""Public import path of the conversion API (kept for scripts written against it): the code lives in
:mod:`gqa_eval.variant` (``conversion.py``, ``pooling.py``, one module per family)."""

from __future__ import annotations

from torch import nn

from gqa_eval.variant.conversion import convert_to_gqa, save_converted
from gqa_eval.variant.family import family_of, supported
from gqa_eval.variant.pooling import METHODS, check_kv_heads, pool_heads
from gqa_eval.variant.t5 import T5GQAForConditionalGeneration, t5_decoder_attentions

__all__ = [
    "METHODS",
    "T5GQAForConditionalGeneration",
    "architecture",
    "attention_heads",
    "check_kv_heads",
    "convert_to_gqa",
    "head_dim",
    "pool_heads",
    "save_converted",
    "supported",
    "t5_decoder_attentions",
]


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
