"""The Hugging Face hub, asked once before a library fetches from it.

transformers and datasets retry an unreachable hub for ~30 s and then fail with a traceback that names
neither the setting nor the fix. Before a hub model (``base.path``) or a hub dataset
(``task.data.source=hub``) is fetched, the caller asks the hub once, with huggingface_hub's metadata
timeout and no retries (:func:`ask`), and checks the local hub cache (:func:`cached`), so that it can
load from the cache or say in one line what to set instead.
"""

from __future__ import annotations

import os
from pathlib import Path


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in ("1", "ON", "YES", "TRUE")


def hub_offline(library: str = "TRANSFORMERS") -> bool:
    """Whether the hub must not be asked: ``HF_HUB_OFFLINE`` (or the library's own ``TRANSFORMERS_OFFLINE``
    / ``HF_DATASETS_OFFLINE``) is set now, or was when huggingface_hub was imported."""
    from huggingface_hub import constants

    own = "HF_DATASETS_OFFLINE" if library == "DATASETS" else "TRANSFORMERS_OFFLINE"
    return constants.is_offline_mode() or _env_true("HF_HUB_OFFLINE") or _env_true(own)


def cached(repo_id: str, revision: str | None, repo_type: str = "model") -> bool:
    """Whether the hub cache holds a snapshot of ``repo_id``: for a model, its config at ``revision``
    (a branch, tag or commit); for a dataset, any snapshot at ``revision`` (datasets picks its files)."""
    from huggingface_hub import constants, try_to_load_from_cache

    if repo_type == "model":
        return isinstance(try_to_load_from_cache(repo_id, "config.json", revision=revision), str)
    folder = Path(constants.HF_HUB_CACHE) / f"{repo_type}s--{repo_id.replace('/', '--')}"
    wanted = revision or "main"
    ref = folder / "refs" / wanted
    snapshot = ref.read_text().strip() if ref.is_file() else wanted
    return (folder / "snapshots" / snapshot).is_dir()


def ask(repo_id: str, revision: str | None, repo_type: str = "model") -> Exception | None:
    """Ask the hub for ``repo_id`` at ``revision`` once (the hub's own metadata timeout, no retries).

    Returns:
        None if the hub has it; else what the hub (or the network) answered: huggingface_hub's
        ``RevisionNotFoundError``, ``GatedRepoError``, ``RepositoryNotFoundError``, or the connection's
        error where the hub cannot be reached.
    """
    from huggingface_hub import HfApi, constants

    info = HfApi().dataset_info if repo_type == "dataset" else HfApi().model_info
    try:
        info(repo_id, revision=revision, timeout=constants.HF_HUB_ETAG_TIMEOUT)
    except Exception as err:  # connection refused, DNS, timeout, proxy, 5xx, or the hub's own answer
        return err
    return None
