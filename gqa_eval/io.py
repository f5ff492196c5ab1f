"""Output files: how results, summaries and caches reach the disk, whole and readable by collaborators.

:func:`write_atomic` writes to a temporary file beside the target, fsyncs it and renames it over the
target, so a reader sees the old file or the new one, never a part. The temporary file is created with
mode ``0o666`` and the kernel applies the process umask, as it does for ``open(path, "w")``: files come
out ``0644`` under the usual umask 022 (``tempfile.mkstemp`` would make them ``0600``, unreadable to
others on a shared machine). :func:`file_mode` is that mode, for files a library wrote too strictly.
:func:`replace_dir` does for a directory (the trainer's resume state) what :func:`write_atomic` does for
a file.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path


def _umask() -> int:
    """The process umask, read without changing it where the OS tells it (Linux >= 4.7)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o077)  # elsewhere: set and restore (0o077, so the moment in between is strict)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The permission bits ``open()`` gives a new file here: ``0o666`` less the umask."""
    return 0o666 & ~_umask()


def write_atomic(path: str | Path, data: str | bytes) -> None:
    """Write ``data`` (str as UTF-8) to ``path`` so that a reader sees the old file or the new one, never
    a part; the file gets mode ``0o666 & ~umask``. The temporary file is removed if anything fails."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:  # O_EXCL: a name another writer holds is never shared, just drawn again
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            fd = os.open(tmp, flags, 0o666)
            break
        except FileExistsError:
            continue
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def readable_weights(directory: str | Path) -> None:
    """Give the ``*.safetensors`` files in ``directory`` the mode every other file gets (:func:`file_mode`).

    safetensors 0.8 writes through a ``0600`` temporary file that it renames (safetensors/safetensors#782),
    so a checkpoint saved with ``save_pretrained`` would be unreadable to collaborators.
    """
    for weights in Path(directory).glob("*.safetensors"):
        weights.chmod(file_mode())


def replace_dir(directory: str | Path, fill: Callable[[Path], None]) -> Path:
    """Write a directory whole: ``fill`` writes a temporary sibling ``<name>.tmp``, which then replaces
    ``directory``. The old one is renamed ``<name>.old`` first and removed last, so a crash leaves
    ``directory`` or ``<name>.old`` complete (a reader tries both, in that order)."""
    directory = Path(directory)
    tmp, old = directory.with_name(directory.name + ".tmp"), directory.with_name(directory.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    fill(tmp)
    if directory.exists():
        shutil.rmtree(old, ignore_errors=True)
        directory.rename(old)
    tmp.rename(directory)
    shutil.rmtree(old, ignore_errors=True)
    return directory
