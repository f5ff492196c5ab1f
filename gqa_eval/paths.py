"""Where relative paths in configs point: the working directory first, then the project's own files.

The bundled evaluation sets and tiny checkpoints live in the repository's ``evals/``; configs name them
relative to the project root (``evals/data/cnn_dm``) so that a run started from any directory finds them.
A checkpoint string that names no existing path is taken for a hub id if it has the hub's form
(:func:`is_hub_id`).
"""

from __future__ import annotations

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def resolve(path: str | Path) -> Path:
    """Resolve ``path``: absolute or ``~`` as given; relative against the cwd if it exists there, else
    against the project root. The returned path may not exist; callers report that themselves."""
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists():
        return p.resolve()
    bundled = PROJECT_ROOT / p
    return bundled if bundled.exists() else p.resolve()


def is_hub_id(name: str) -> bool:
    """True for a string of the Hugging Face hub's repo-id form: ``namespace/name`` (``Qwen/Qwen2.5-0.5B``,
    dots and dashes allowed), or a bare ``name``, the hub's legacy canonical ids (``gpt2``, ``t5-small``,
    which it redirects to their organisations). Paths (``./x``, ``/x``, ``~/x``, ``a/b/c``) are not.

    Only the form is checked; whether the repository exists is the hub's to say. Callers ask
    :func:`resolve` first: an existing local path wins over an id that looks the same.
    """
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True
