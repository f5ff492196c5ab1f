"""Variant stage, saved checkpoints: what makes a saved GQA checkpoint loadable without gqa-eval.

Plain ``from_pretrained`` cannot size a T5 or BART-like checkpoint whose decoder has fewer key/value
heads than query heads: it raises on the K/V shapes, and with ``ignore_mismatched_sizes=True`` silently
re-initialises them. :func:`write_loadable_files` therefore gives such a checkpoint its own modelling file
(:mod:`gqa_eval.variant.remote_modeling`, copied verbatim as ``modeling_gqa.py``) and an ``auto_map`` in
``config.json``, so ``AutoModelForSeq2SeqLM.from_pretrained(path, trust_remote_code=True)`` rebuilds it.
The stock config class is kept (``num_key_value_heads`` is an extra attribute), so gqa-eval's own
:func:`~gqa_eval.variant.checkpoints.load_checkpoint` still reads it without running that file.
Decoder-only families already record ``num_key_value_heads`` and reload with ``AutoModelForCausalLM``.
Every checkpoint gets a model card saying how to load it and how it was converted.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from torch import nn

from gqa_eval.variant import remote_modeling
from gqa_eval.variant.family import family_of

MODELING_FILE = "modeling_gqa.py"
CARD_FILE = "README.md"
CARD_MARK = "<!-- model card written by gqa-eval -->"  # a card carrying it is ours to rewrite


def remote_class_name(model: nn.Module) -> str | None:
    """The class of ``modeling_gqa.py`` that rebuilds ``model``'s checkpoint; None where plain transformers
    needs none (decoder-only families, and encoder-decoders whose decoder kept all its K/V heads)."""
    family = family_of(model)
    if not family.encoder_decoder or family.kv_heads == family.n_heads:
        return None
    cls = remote_modeling.CLASSES.get(model.config.model_type)
    if cls is None:
        raise ValueError(
            f"no class in {remote_modeling.__name__} rebuilds a grouped {model.config.model_type} "
            f"checkpoint; add one to its CLASSES (it has {', '.join(sorted(remote_modeling.CLASSES))})"
        )
    return cls.__name__


def write_loadable_files(model: nn.Module, out: str | Path) -> None:
    """Make the checkpoint ``model.save_pretrained`` just wrote to ``out`` loadable by plain transformers.

    Grouped encoder-decoder models get ``modeling_gqa.py`` and ``config.json``'s ``auto_map`` (for
    ``AutoModelForSeq2SeqLM``, trust_remote_code=True); every model gets a ``README.md`` model card unless
    ``out`` already holds one that gqa-eval did not write.
    """
    out = Path(out)
    name = remote_class_name(model)
    if name is not None:
        shutil.copyfile(remote_modeling.__file__, out / MODELING_FILE)
        config_file = out / "config.json"
        config = json.loads(config_file.read_text())
        config["auto_map"] = {"AutoModelForSeq2SeqLM": f"{Path(MODELING_FILE).stem}.{name}"}
        config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    else:  # a copy left by an earlier grouped save into this directory (overwrite=true) is dead code now
        (out / MODELING_FILE).unlink(missing_ok=True)
    card = out / CARD_FILE
    if not card.exists() or CARD_MARK in card.read_text(errors="replace"):
        card.write_text(model_card(model, name))


def _conversion_lines(model: nn.Module) -> list[str]:
    """One line per recorded conversion (``config.gqa_conversion``), oldest first."""
    history = getattr(model.config, "gqa_conversion", None) or []
    lines = []
    for entry in history:
        calibrated = f", calibrated on {entry['calibration']}" if entry.get("calibration") else ""
        lines.append(
            f"- {entry.get('from_kv_heads')} -> {entry.get('kv_heads')} key/value heads, "
            f"method `{entry.get('method')}`, seed {entry.get('seed')}{calibrated}"
        )
    return lines or ["- no conversion recorded (`config.gqa_conversion` is empty)"]


def model_card(model: nn.Module, remote_class: str | None) -> str:
    """The model card: what the checkpoint is, how to load it (gqa-eval or plain transformers), and how
    its key/value heads were converted."""
    family = family_of(model)
    where = (
        "in the decoder's self- and cross-attention (the encoder stays multi-head)"
        if family.encoder_decoder
        else "in its self-attention layers"
    )
    auto = "AutoModelForSeq2SeqLM" if family.encoder_decoder else "AutoModelForCausalLM"
    if remote_class is None:
        plain = f"from transformers import {auto}\nmodel = {auto}.from_pretrained(path)"
        remote_note = ""
    else:
        plain = (
            f"from transformers import {auto}\n"
            f"model = {auto}.from_pretrained(path, trust_remote_code=True)  # runs {MODELING_FILE}"
        )
        remote_note = (
            f"\nPlain loading runs this directory's `{MODELING_FILE}` (class `{remote_class}`, torch and "
            "transformers only): the decoder's K/V heads are repeated to their query heads, so it gives "
            "gqa-eval's logits, not its speed. Without `trust_remote_code=True` transformers builds the "
            "multi-head class and cannot load the narrowed K/V weights.\n"
        )
    return f"""{CARD_MARK}
# Grouped-query attention checkpoint ({family.name})

Converted by gqa-eval to grouped-query attention (Ainslie et al. 2023, arXiv 2305.13245):
{family.n_heads} query heads share {family.kv_heads} key/value heads {where}.

## Conversion

{chr(10).join(_conversion_lines(model))}

## Loading

With gqa-eval:

```python
from gqa_eval import load_checkpoint
model, tokenizer = load_checkpoint(path)
```

With transformers alone:

```python
{plain}
```
{remote_note}"""
