"""Checkpoint stage: load a checkpoint (hub id or local directory) and its tokenizer, safely.

Weights load from safetensors only, unless the caller explicitly allows pickle files (then torch loads
them with ``weights_only``); ``trust_remote_code`` stays off unless asked for. T5 checkpoints saved after
conversion to grouped-query attention (``config.num_key_value_heads < num_heads``) are sized by
``T5GQAForConditionalGeneration``, which plain ``T5ForConditionalGeneration`` cannot do.
"""

from __future__ import annotations

from pathlib import Path

import torch

from gqa_eval.paths import looks_like_path, resolve

DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")


class CheckpointError(ValueError):
    """A checkpoint cannot be loaded as asked."""


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype for a config name (``float32``, ``bfloat16``, ``float16``)."""
    try:
        return DTYPES[name]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}; choose one of {sorted(set(DTYPES))}") from None


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA if available, else CPU; anything else must be available here."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device={name} was asked for but CUDA is not available here; use device=cpu or auto"
        )
    return device


def check_dtype_device(dtype: torch.dtype, device: torch.device) -> None:
    """Refuse combinations that run wrongly or absurdly slowly."""
    if device.type == "cpu" and dtype == torch.float16:
        raise ValueError(
            "dtype=float16 on device=cpu is not supported (slow and lossy); use float32 or bfloat16"
        )


def _check_local(path: Path, allow_pickle: bool) -> None:
    if not path.is_dir():
        raise CheckpointError(
            f"checkpoint path {path} does not exist or is not a directory; "
            "give a directory saved with save_pretrained (config.json + *.safetensors) or a hub id"
        )
    if not (path / "config.json").is_file():
        raise CheckpointError(f"checkpoint {path} has no config.json; is it a transformers checkpoint?")
    weights = sorted(path.glob("*.safetensors"))
    if weights:
        from safetensors import safe_open

        for f in weights:
            try:
                with safe_open(str(f), "pt"):
                    pass
            except Exception as err:  # safetensors raises its own error type from Rust
                raise CheckpointError(
                    f"{f} is not a valid safetensors file ({err}); it is truncated or corrupt: "
                    "download or save it again"
                ) from None
        return
    pickles = [p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES]
    if pickles and not allow_pickle:
        raise CheckpointError(
            f"checkpoint {path} has only pickle weights ({', '.join(sorted(pickles))}), "
            "which can run code when "
            "loaded. Convert it to safetensors, or set base.allow_pickle=true if you trust it "
            "(it is then loaded with weights_only=True)"
        )
    if not pickles:
        raise CheckpointError(f"checkpoint {path} has no weights (*.safetensors)")


def model_class(config):
    """The transformers class that builds ``config``: seq2seq, causal LM, or T5 with grouped decoder."""
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    from gqa_eval.convert import T5GQAForConditionalGeneration

    if config.model_type == "t5":
        kv_heads = getattr(config, "num_key_value_heads", None)
        return T5GQAForConditionalGeneration if kv_heads else AutoModelForSeq2SeqLM
    return AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM


def load_checkpoint(
    path_or_id: str,
    *,
    revision: str | None = None,
    dtype: str = "float32",
    device: str = "cpu",
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
):
    """Load a model and its tokenizer for evaluation.

    Args:
        path_or_id: a local directory (relative paths resolve against the cwd, then the project) or a hub id.
        revision: hub revision (branch, tag or commit) to pin.
        dtype: ``float32``, ``bfloat16`` or ``float16``.
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``auto``.
        allow_pickle: accept ``.bin``/``.pt`` weights (loaded with ``weights_only``).
        trust_remote_code: run the checkpoint's own modelling code (off unless you trust it).

    Returns:
        ``(model, tokenizer)``, the model in eval mode on ``device``.
    """
    from transformers import AutoConfig, AutoTokenizer

    torch_type = torch_dtype(dtype)
    dev = resolve_device(device)
    check_dtype_device(torch_type, dev)
    source: str | Path = path_or_id
    if looks_like_path(path_or_id) or resolve(path_or_id).is_dir():
        source = resolve(path_or_id)
        _check_local(source, allow_pickle)
    kwargs = {"revision": revision, "trust_remote_code": trust_remote_code}
    try:
        config = AutoConfig.from_pretrained(source, **kwargs)
        cls = model_class(config)
        model = cls.from_pretrained(
            source, config=config, dtype=torch_type, use_safetensors=None if allow_pickle else True, **kwargs
        )
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    except CheckpointError:
        raise
    except Exception as err:  # transformers/safetensors/hub raise many types; name the checkpoint
        raise CheckpointError(f"cannot load checkpoint {path_or_id}: {type(err).__name__}: {err}") from err
    return model.to(dev).eval(), tokenizer


def checkpoint_files_digest(path: str | Path) -> dict[str, str]:
    """Sizes and names of a local checkpoint's weight files (for provenance in result.json)."""
    p = resolve(path)
    if not p.is_dir():
        return {}
    return {f.name: str(f.stat().st_size) for f in sorted(p.glob("*.safetensors"))}
