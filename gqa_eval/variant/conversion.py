"""Variant stage: build the variant a run evaluates, and the ``gqa-eval-convert`` command.

:func:`convert_to_gqa` converts a multi-head checkpoint to grouped-query attention with G key/value heads
(Ainslie et al. 2023, arXiv 2305.13245, sec. 2.1), GQA-1 being multi-query attention and GQA-H MHA, by
the methods of :mod:`gqa_eval.variant.pooling`, on the attention its :class:`Family` names. Conversion
happens in place: only the pooled K/V projections are new tensors, so a real-size model is never held
twice. :func:`make_variant` loads a run's base checkpoint and converts it as ``cfg.model`` says;
:func:`convert_checkpoint` writes a converted checkpoint that :func:`load_checkpoint` reloads.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from gqa_eval import __version__
from gqa_eval.io import readable_weights
from gqa_eval.variant.calibration import calibration_batches, kv_statistics
from gqa_eval.variant.checkpoints import checkpoint_files_digest, load_checkpoint, resolved_revision
from gqa_eval.variant.family import family_of
from gqa_eval.variant.heads import prepare_heads, uses_calibration
from gqa_eval.variant.loadable import write_loadable_files
from gqa_eval.variant.pooling import check_kv_heads, check_method


def convert_to_gqa(
    model: nn.Module,
    kv_heads: int,
    method: str = "mean",
    seed: int = 0,
    calibration: Sequence[Mapping[str, torch.Tensor]] | None = None,
    calibration_record: Mapping[str, Any] | None = None,
) -> nn.Module:
    """Convert ``model`` in place to ``kv_heads`` key/value heads and return it.

    Args:
        model: a model :func:`~gqa_eval.variant.family.family_of` knows (T5, BART-like, or a decoder-only
            causal LM with ``num_key_value_heads`` and k/v or fused qkv projections); may already be
            grouped, as long as ``kv_heads`` divides its current key/value heads (``aligned`` and
            ``clustered`` need a multi-head one).
        kv_heads: G, the number of key/value heads after conversion (1 = MQA).
        method: ``mean`` (the paper's), ``first``, ``random``, or the calibrated ``aligned``,
            ``clustered``, ``clustered_aligned`` (:mod:`gqa_eval.variant.heads`).
        seed: seed of ``random`` initialisation.
        calibration: the calibrated methods' inputs, a sequence of ``model(**batch)`` inputs
            (:func:`gqa_eval.variant.calibration.calibration_batches`).
        calibration_record: how ``calibration`` was made, recorded in ``config.gqa_conversion``.

    Returns:
        The same model object, with narrowed K/V projections and its config recording ``kv_heads`` and
        the conversion (``config.gqa_conversion``), so it saves and reloads as a GQA checkpoint.

    Raises:
        ValueError: unsupported architecture, unknown method, ``kv_heads`` that is not a divisor of
            the current key/value heads, or a calibrated method on a model it cannot convert exactly
            or without calibration inputs.
    """
    family = family_of(model)
    check_method(method)
    current = family.kv_heads
    check_kv_heads(family.n_heads, current, kv_heads)
    calibrated = uses_calibration(method) and kv_heads != current  # G = current heads: nothing to reshape
    gen = torch.Generator().manual_seed(seed)
    if kv_heads != current:
        refusal = family.conversion_refusal()
        if refusal:
            raise ValueError(refusal)
        if calibrated:
            check_calibrated(family, method, calibration)
        with family.editing():  # fused projections split while they are edited
            if calibrated:
                orders = prepare_heads(family, kv_heads, method, kv_statistics(family, calibration))
                if orders:
                    family.record_head_orders(orders)
            family.pool_kv(kv_heads, method, gen)
    family.set_kv_heads(kv_heads)
    config = model.config
    history = list(getattr(config, "gqa_conversion", None) or [])
    entry = {"from_kv_heads": current, "kv_heads": kv_heads, "method": method, "seed": seed}
    if calibrated:
        entry["calibration"] = dict(calibration_record or {"examples": len(calibration)})
    history.append(entry)
    config.gqa_conversion = history
    return model


def check_calibrated(family, method: str, calibration) -> None:
    """Raise ``ValueError`` unless the calibrated ``method`` can convert ``family``'s model exactly."""
    if family.kv_heads != family.n_heads:
        raise ValueError(
            f"conversion={method} reshapes the heads of a multi-head model; this one already has "
            f"{family.kv_heads} key/value heads for {family.n_heads} query heads"
        )
    refusal = family.reshape_refusal(method)
    if refusal:
        raise ValueError(refusal)
    if method.endswith("aligned"):
        if family.rope and family.head_dim % 2:
            raise ValueError(
                f"conversion={method} needs an even head width under RoPE, got {family.head_dim}"
            )
    if not calibration:
        raise ValueError(
            f"conversion={method} needs calibration inputs (calibration=[batch, ...]); "
            "make them with gqa_eval.variant.calibration.calibration_batches"
        )


def _plain(settings):
    return OmegaConf.to_container(settings, resolve=True) if isinstance(settings, DictConfig) else settings


def calibrate_and_convert(
    model, tokenizer, kv_heads: int, method: str, seed: int, calibration_cfg, error_cfg=None
) -> dict[str, Any] | None:
    """Convert as :func:`convert_to_gqa`, making the calibration set first when ``method`` needs one.

    With ``error_cfg`` (``conversion_error``'s settings: examples, max_tokens, seed), a conversion that
    changes the heads is measured as it is made (:func:`gqa_eval.variant.damage.conversion_error`, on
    examples of its own); returns that record, else None.
    """
    batches, record = None, None
    family = family_of(model)
    if uses_calibration(method) and kv_heads != family.kv_heads:
        batches, record = calibration_batches(tokenizer, family.encoder_decoder, _plain(calibration_cfg))
    convert = partial(
        convert_to_gqa,
        model,
        kv_heads,
        method=method,
        seed=seed,
        calibration=batches,
        calibration_record=record,
    )
    if error_cfg is None or kv_heads == family.kv_heads:
        convert()
        return None
    from gqa_eval.variant.damage import conversion_error

    examples, settings = calibration_batches(tokenizer, family.encoder_decoder, _plain(error_cfg))
    error = conversion_error(model, convert, examples)
    return {**error, "max_tokens": settings["max_tokens"], "seed": settings["seed"]}


def conversion_method(model: nn.Module) -> str | None:
    """How the model's K/V heads were last pooled (from ``config.gqa_conversion``), None if never."""
    history = getattr(model.config, "gqa_conversion", None) or []
    return history[-1]["method"] if history else None


def refuse_nonempty(out: str | Path, overwrite: bool) -> None:
    """Raise ``FileExistsError`` if ``out`` holds files and ``overwrite`` is false (nothing is touched)."""
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} is not empty; choose another out= or set overwrite=true")


def save_converted(
    model: nn.Module, tokenizer, out: str | Path, overwrite: bool = False, **provenance
) -> Path:
    """Save a converted model as a checkpoint ``load_checkpoint`` reloads: safetensors weights, a config
    recording ``num_key_value_heads`` and ``gqa_conversion``, the tokenizer, ``gqa_conversion.json``
    (where it came from and how it was made), and what lets plain transformers load it too
    (:func:`~gqa_eval.variant.loadable.write_loadable_files`: a model card, and for T5 / BART-like
    models ``modeling_gqa.py`` with ``config.json``'s ``auto_map``).

    Raises:
        FileExistsError: ``out`` holds files and ``overwrite`` is false (nothing is touched then).
    """
    out = Path(out)
    refuse_nonempty(out, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    readable_weights(out)
    write_loadable_files(model, out)  # modeling_gqa.py + auto_map (seq2seq) and a model card
    tokenizer.save_pretrained(out)
    family = family_of(model)
    record = {
        "arch": family.name,
        "n_heads": family.n_heads,
        "kv_heads": family.kv_heads,
        "history": getattr(model.config, "gqa_conversion", []),
        **provenance,
    }
    (out / "gqa_conversion.json").write_text(json.dumps(record, indent=2) + "\n")
    return out


def _load_options(base: DictConfig) -> dict:
    """The ``load_checkpoint`` options a base config sets."""
    return {
        "revision": base.get("revision"),
        "allow_pickle": base.get("allow_pickle", False),
        "trust_remote_code": base.get("trust_remote_code", False),
    }


def make_variant(cfg: DictConfig):
    """Load the base checkpoint (or a saved converted one) and convert it as the model config says.

    Returns:
        ``(model, tokenizer, provenance)``: provenance records what was loaded and how it was converted.
    """
    base, variant = cfg.base, cfg.model
    source = variant.get("checkpoint") or base.path
    model, tokenizer = load_checkpoint(source, dtype=cfg.dtype, device=cfg.device, **_load_options(base))
    loaded_kv_heads = family_of(model).kv_heads
    kv_heads = variant.get("kv_heads")
    error = None
    if kv_heads is not None:  # G equal to the loaded heads pools nothing but is validated all the same
        error = calibrate_and_convert(
            model, tokenizer, int(kv_heads), variant.conversion, cfg.seed, variant.get("calibration"),
            cfg.get("conversion_error"),
        )  # fmt: skip
    provenance = {
        "source": str(source),
        "revision": base.get("revision"),
        # the commit a hub id resolved to (transformers records it on the config); None for local dirs
        "resolved_revision": resolved_revision(source, base.get("revision"), model.config),
        "weights": checkpoint_files_digest(source),
        "loaded_kv_heads": loaded_kv_heads,
        "conversion": OmegaConf.to_container(variant, resolve=True),
    }
    history = getattr(model.config, "gqa_conversion", None) or []
    if kv_heads is not None and history and "calibration" in history[-1]:
        provenance["calibration"] = history[-1]["calibration"]
    provenance["conversion_error"] = error
    return model, tokenizer, provenance


def convert_checkpoint(cfg: DictConfig) -> Path:
    """``gqa-eval-convert``: load ``cfg.base``, convert it to ``cfg.kv_heads`` and save it to ``cfg.out``.

    ``kv_heads`` and ``out`` are checked before the checkpoint is loaded: unset, or of the wrong kind,
    they are refused in one line that names the key and what to set.
    """
    required = {
        "kv_heads": "the number of key/value heads after conversion (1 = MQA): set kv_heads=N",
        "out": "the directory to write the converted checkpoint to: set out=DIR",
    }
    if "method" in cfg:  # +method=... would otherwise be ignored: the key is conversion now
        raise ValueError("method= was renamed conversion= (as model.conversion is named); set conversion=...")
    missing = [key for key in required if OmegaConf.is_missing(cfg, key) or cfg.get(key) in (None, "")]
    if missing:
        raise ValueError(
            f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} required but not set; "
            + "; ".join(required[key] for key in missing)
        )
    if isinstance(cfg.kv_heads, bool) or not isinstance(cfg.kv_heads, int) or cfg.kv_heads < 1:
        raise ValueError(
            f"kv_heads must be a whole number >= 1 (key/value heads after conversion, 1 = MQA), "
            f"got kv_heads={cfg.kv_heads!r}"
        )
    refuse_nonempty(cfg.out, cfg.overwrite)  # before the (possibly long) load
    base = cfg.base
    model, tokenizer = load_checkpoint(base.path, dtype=cfg.dtype, device="cpu", **_load_options(base))
    error = calibrate_and_convert(
        model,
        tokenizer,
        cfg.kv_heads,
        cfg.conversion,
        cfg.seed,
        cfg.get("calibration"),
        cfg.get("conversion_error"),
    )
    save_converted(
        model, tokenizer, cfg.out, overwrite=cfg.overwrite, base=base.name, source=str(base.path),
        revision=base.get("revision"), weights=checkpoint_files_digest(base.path), gqa_eval=__version__,
        conversion_error=error,
    )  # fmt: skip
    damage = f", conversion error {error['value']:.4f}" if error else ""
    print(f"wrote {cfg.out}: {base.name} with kv_heads={cfg.kv_heads} ({cfg.conversion}{damage})")
    return Path(cfg.out)
