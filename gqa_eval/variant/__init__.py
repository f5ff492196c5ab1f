"""Variant stage: load a checkpoint, convert its attention to G key/value heads, save and reload it.

========================  ===================================================================
``family.py``             :class:`Family`, what the other stages ask of a model, and
                          :func:`family_of`; one subclass per family shape:
``t5.py``                 T5 (decoder self- and cross-attention converted), the reload class
``decoder.py``            decoder-only Llama / Mistral / Qwen2 / Qwen3
``pooling.py``            the conversion methods (mean, first, random) on one projection
``conversion.py``         :func:`convert_to_gqa`, :func:`make_variant`, the convert command
``attention.py``          grouped attention without repeating K/V (T5's decoder; training)
``checkpoints.py``        :func:`load_checkpoint`: hub ids and local dirs, safetensors only
========================  ===================================================================
"""

from gqa_eval.variant import decoder, t5  # noqa: F401  (register the families)
from gqa_eval.variant.family import Family, family_of

__all__ = ["Family", "family_of"]
