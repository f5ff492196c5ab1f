"""Variant stage, checkpoints: load a checkpoint (hub id or local directory) and its tokenizer, safely.

A checkpoint string that names an existing path (the cwd, then the project) is local; otherwise one of
the hub's form (``namespace/name``, or a legacy bare ``name``) is a hub id; anything else is refused.
Before a hub id is fetched the hub is asked once, with a short timeout, whether the model and revision
exist: unreachable means the local cache is used if it holds them, and one line of error if not, instead
of transformers' retries. ``HF_HUB_OFFLINE=1`` goes to the cache without asking.

Weights load from safetensors only, unless the caller explicitly allows pickle files (then torch loads
them with ``weights_only``); ``trust_remote_code`` stays off unless asked for. T5 checkpoints saved after
conversion to grouped-query attention (``config.num_key_value_heads < num_heads``) are sized by
``T5GQAForConditionalGeneration``, which plain ``T5ForConditionalGeneration`` cannot do; BART, mBART,
Pegasus and Marian ones likewise by the classes of :mod:`gqa_eval.variant.bart`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from gqa_eval.hub import ask, cached, hub_offline
from gqa_eval.paths import PROJECT_ROOT, is_hub_id, resolve

log = logging.getLogger(__name__)

DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}
DEVICE_CHOICES = "auto, cpu, cuda, cuda:N or mps"
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
    """``auto`` -> CUDA if available, else CPU; anything else must be a device torch knows and that is
    available here.

    Raises:
        ValueError: one line naming the valid choices, for a string torch cannot parse (``tpu``), a device
            type this project does not run on (``meta``), or one that is missing here.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):  # torch: "Expected one of cpu, cuda, ... device type at start of ..."
        raise ValueError(f"unknown device {name!r}; choose one of {DEVICE_CHOICES}") from None
    if device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device={name} is not supported here; choose one of {DEVICE_CHOICES}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device={name} was asked for but CUDA is not available here; use device=cpu or auto"
            )
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ValueError(
                f"device={name} was asked for but this machine has {count} CUDA device(s): "
                f"use cuda:0 to cuda:{count - 1}, cuda or auto"
            )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device={name} was asked for but MPS is not available here; use device=cpu or auto")
    return device


def check_dtype_device(dtype: torch.dtype, device: torch.device) -> None:
    """Refuse combinations that run wrongly or absurdly slowly."""
    if device.type == "cpu" and dtype == torch.float16:
        raise ValueError(
            "dtype=float16 on device=cpu is not supported (slow and lossy); use float32 or bfloat16"
        )


def checkpoint_source(path_or_id: str) -> Path | str:
    """Where ``path_or_id`` is: the local :class:`~pathlib.Path` if it exists (relative to the cwd, then the
    project root), else the string itself if it has the hub's id form (:func:`~gqa_eval.paths.is_hub_id`).

    Raises:
        CheckpointError: it is neither, saying what was expected.
    """
    if not str(path_or_id).strip():  # Path("") is the working directory: never what was meant
        raise CheckpointError(
            "the checkpoint path is empty; give a local directory or a hub id namespace/name"
        )
    local = resolve(path_or_id)
    if local.exists():
        return local
    if is_hub_id(path_or_id):
        return path_or_id
    raise CheckpointError(
        f"checkpoint path {local} does not exist (relative paths are looked up in the working directory, "
        f"then {PROJECT_ROOT}), and {path_or_id!r} is not a hub id; expected a directory saved with "
        "save_pretrained (config.json + *.safetensors) or a hub id namespace/name (e.g. Qwen/Qwen2.5-0.5B)"
    )


def _check_local(path: Path, allow_pickle: bool) -> None:
    if not path.is_dir():
        raise CheckpointError(
            f"checkpoint path {path} is not a directory; give the directory saved with save_pretrained "
            "(config.json + *.safetensors), not a file in it"
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


def _hub_preflight(repo_id: str, revision: str | None) -> bool:
    """Check that the hub has ``repo_id`` at ``revision`` before transformers fetches it.

    Returns:
        True when it must load from the local cache only (offline, or the hub unreachable but the cache
        holds it), False to fetch from the hub as usual.

    Raises:
        CheckpointError: in one line, when the hub says the model or revision does not exist, or when it
            cannot be reached (or offline mode is set) and the cache does not hold the model.
    """
    from huggingface_hub import constants
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    at = f" (revision {revision})" if revision else ""
    if hub_offline():
        if cached(repo_id, revision):
            return True
        raise CheckpointError(
            f"HF_HUB_OFFLINE is set but the hub cache ({constants.HF_HUB_CACHE}) does not hold "
            f"{repo_id}{at}: set base.path to a local copy, or fetch it once with the hub reachable"
        )
    err = ask(repo_id, revision)  # one request with the hub's own metadata timeout; it does not retry
    if err is None:
        return False
    if isinstance(err, RevisionNotFoundError):
        raise CheckpointError(
            f"the hub model {repo_id} has no revision {revision!r}; give a branch, tag or commit it has"
        )
    if isinstance(err, GatedRepoError):  # a subclass of RepositoryNotFoundError: access is refused
        raise CheckpointError(
            f"the hub model {repo_id} is gated: accept its terms on the hub and log in (hf auth login or "
            "HF_TOKEN), or set base.path to a local copy"
        )
    if isinstance(err, RepositoryNotFoundError):
        raise CheckpointError(
            f"no local path {resolve(repo_id)} and no hub model {repo_id} (or it is private: log in with "
            "hf auth login or HF_TOKEN); give a directory saved with save_pretrained or a hub id that exists"
        )
    # connection refused, DNS, timeout, proxy, 5xx: the hub cannot answer
    if cached(repo_id, revision):
        log.warning("cannot reach the Hugging Face hub (%s); loading %s from the cache", err, repo_id)
        return True
    raise CheckpointError(
        f"cannot reach the Hugging Face hub ({constants.ENDPOINT}: {type(err).__name__}) to fetch "
        f"{repo_id}{at} (offline?): set base.path to a local copy, or HF_HUB_OFFLINE=1 with a populated "
        "cache"
    )


def model_class(config):
    """The transformers class that builds ``config``: seq2seq, causal LM, or T5 / BART-like with grouped
    decoder."""
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    from gqa_eval.variant.bart import GROUPED_CLASSES
    from gqa_eval.variant.t5 import T5GQAForConditionalGeneration

    if config.model_type == "t5":
        kv_heads = getattr(config, "num_key_value_heads", None)
        return T5GQAForConditionalGeneration if kv_heads else AutoModelForSeq2SeqLM
    if config.model_type in GROUPED_CLASSES and getattr(config, "num_key_value_heads", None):
        return GROUPED_CLASSES[config.model_type]  # BART, mBART, Pegasus, Marian converted to GQA
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
        path_or_id: a local directory (relative paths resolve against the cwd, then the project) or, if no
            such path exists, a hub id (``namespace/name``, or a legacy bare ``name`` such as ``gpt2``).
        revision: hub revision (branch, tag or commit) to pin.
        dtype: ``float32``, ``bfloat16`` or ``float16``.
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``auto``.
        allow_pickle: accept ``.bin``/``.pt`` weights (loaded with ``weights_only``).
        trust_remote_code: run the checkpoint's own modelling code (off unless you trust it).

    Returns:
        ``(model, tokenizer)``, the model in eval mode on ``device``.
    """
    from transformers import AutoConfig, AutoTokenizer

    from gqa_eval.variant.decoder import route_grouped_attention

    torch_type = torch_dtype(dtype)
    dev = resolve_device(device)
    check_dtype_device(torch_type, dev)
    source = checkpoint_source(path_or_id)
    kwargs = {"revision": revision, "trust_remote_code": trust_remote_code}
    if isinstance(source, Path):
        _check_local(source, allow_pickle)
    elif _hub_preflight(source, revision):
        kwargs["local_files_only"] = True
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
        message = " ".join(str(err).split())  # transformers' messages span lines; the CLI prints one
        raise CheckpointError(
            f"cannot load checkpoint {path_or_id}: {type(err).__name__}: {message}"
        ) from err
    return route_grouped_attention(model.to(dev).eval()), tokenizer  # G < H: no K/V copies


def resolved_revision(path_or_id: str, revision: str | None, config=None) -> str | None:
    """The hub commit a loaded hub id resolved to (None for a local directory): the snapshot folder the
    hub cache served ``config.json`` from (transformers 5 no longer keeps ``config._commit_hash``)."""
    if isinstance(checkpoint_source(str(path_or_id)), Path):
        return None
    commit = getattr(config, "_commit_hash", None)
    if commit:
        return commit
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(str(path_or_id), "config.json", revision=revision)
    return Path(cached).parent.name if isinstance(cached, str) else None


def checkpoint_files_digest(path: str | Path) -> dict[str, str]:
    """Sizes and names of a local checkpoint's weight files (for provenance in result.json)."""
    p = resolve(path)
    if not p.is_dir():
        return {}
    return {f.name: str(f.stat().st_size) for f in sorted(p.glob("*.safetensors"))}
