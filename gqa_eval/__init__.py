"""gqa-eval: what converting an MHA checkpoint to grouped-query attention costs in quality and buys in speed.

Ainslie et al. 2023, "GQA: Training Generalized Multi-Query Transformer Models from Multi-Head
Checkpoints", arXiv 2305.13245.

The package's face, for scripts and notebooks::

    from gqa_eval import load_checkpoint, convert_to_gqa, save_converted
    model, tokenizer = load_checkpoint("google/flan-t5-small")
    convert_to_gqa(model, kv_heads=2)             # in place; method="mean" (the paper's)
    save_converted(model, tokenizer, "out/flan_t5_small_gqa2")

The names are loaded on first use (``import gqa_eval`` stays free of torch and transformers); each is the
stage's own object (``gqa_eval.variant.*``), not a copy.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> the module that defines it
_PUBLIC = {
    "convert_to_gqa": "gqa_eval.variant.conversion",
    "save_converted": "gqa_eval.variant.conversion",
    "METHODS": "gqa_eval.variant.pooling",
    "check_kv_heads": "gqa_eval.variant.pooling",
    "pool_heads": "gqa_eval.variant.pooling",
    "Family": "gqa_eval.variant.family",
    "family_of": "gqa_eval.variant.family",
    "supported": "gqa_eval.variant.family",
    "architecture": "gqa_eval.variant.family",
    "attention_heads": "gqa_eval.variant.family",
    "head_dim": "gqa_eval.variant.family",
    "T5GQAForConditionalGeneration": "gqa_eval.variant.t5",
    "t5_decoder_attentions": "gqa_eval.variant.t5",
    "CheckpointError": "gqa_eval.variant.checkpoints",
    "checkpoint_source": "gqa_eval.variant.checkpoints",
    "load_checkpoint": "gqa_eval.variant.checkpoints",
    "resolve_device": "gqa_eval.variant.checkpoints",
    "torch_dtype": "gqa_eval.variant.checkpoints",
}

__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str):
    if name in _PUBLIC:
        module = importlib.import_module("gqa_eval.variant")  # registers every family first
        module = importlib.import_module(_PUBLIC[name])
        value = getattr(module, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'gqa_eval' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))
