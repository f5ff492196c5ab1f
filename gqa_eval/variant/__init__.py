"""Variant stage: load a checkpoint, convert its attention to G key/value heads, save and reload it.

========================  ===================================================================
``family.py``             :class:`Family`, what the other stages ask of a model, and
                          :func:`family_of`; one subclass per family shape:
``t5.py``                 T5 (decoder self- and cross-attention converted), the reload class
``bart.py``               BART / mBART / Pegasus / Marian (likewise), their reload classes
``decoder.py``            decoder-only models by rule: separate k/v projections, or a fused qkv_proj
``pooling.py``            the conversion methods (mean, first, random) on one projection
``heads.py``              aligned / clustered: head rotations and permutations before pooling
``calibration.py``        the calibration activations those fit
``conversion.py``         :func:`convert_to_gqa`, :func:`make_variant`, the convert command
``attention.py``          grouped attention without repeating K/V (the encoder-decoders; training)
``checkpoints.py``        :func:`load_checkpoint`: hub ids and local dirs, safetensors only
========================  ===================================================================
"""

from gqa_eval.variant import bart, decoder, t5  # noqa: F401  (register the families)
from gqa_eval.variant.family import Family, family_of

__all__ = ["Family", "family_of"]
