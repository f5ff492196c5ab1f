"""Where relative paths in configs point: the working directory first, then the project's own files.

The bundled evaluation sets and tiny checkpoints live in the repository's ``evals/``; configs name them
relative to the project root (``evals/data/cnn_dm``) so that a run started from any directory finds them.
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


def looks_like_path(name: str) -> bool:
    """True for strings meant as filesystem paths rather than hub ids (``org/name``)."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or Path(name).suffix != ""
