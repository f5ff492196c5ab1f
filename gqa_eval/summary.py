"""Summary stage: collect every ``result.json`` under a folder into one long-format ``summary.csv``.

One row per run (variant x task), with the columns of the output contract in a fixed order. Jobs of a
sweep never append to a shared file: each writes its own ``result.json``, and the summary is rebuilt by
reading them all and replaced atomically (temp file + rename, under a lock so concurrent rebuilds
cannot drop each other's rows). ``gqa-eval-summary DIR`` rebuilds it for any folder.
"""

from __future__ import annotations

import argparse
import csv
import fcntl
import io
import json
import os
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

COLUMNS = [
    "model", "base", "arch", "n_heads", "kv_heads", "conversion", "task", "split", "n_samples",
    "metric", "score",
    "rouge1", "rouge2", "rougeL", "rougeLsum", "bleu", "exact_match", "f1",
    "time_per_sample_s", "prefill_s_per_sample", "decode_s_per_token", "tokens_per_s", "peak_mem_mb",
    "kv_cache_bytes_per_token", "params", "device", "dtype", "batch_size", "run_dir",
]  # fmt: skip
METRIC_COLUMNS = ("rouge1", "rouge2", "rougeL", "rougeLsum", "bleu", "exact_match", "f1")


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that a reader sees the old file or the new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def find_results(root: Path) -> list[Path]:
    """Every ``result.json`` below ``root``, in a stable order."""
    return sorted(root.rglob("result.json"))


def row(result: dict, run_dir: Path | None = None, root: Path | None = None) -> dict:
    """A summary row (the output contract's columns) from one ``result.json``; ``run_dir`` is given
    relative to ``root`` when both are known, so a summary stays valid when its folder moves."""
    out = {col: result.get(col) for col in COLUMNS}
    if run_dir is not None and root is not None:
        out["run_dir"] = os.path.relpath(run_dir, root)
    scores = result.get("metrics", {})
    for name in METRIC_COLUMNS:
        out[name] = scores.get(name)
    return out


def read_rows(root: Path) -> list[dict]:
    """Rows of every readable ``result.json`` under ``root``; unreadable ones are reported, not fatal."""
    rows = []
    for path in find_results(root):
        try:
            rows.append(row(json.loads(path.read_text(encoding="utf-8")), path.parent, root))
        except (OSError, json.JSONDecodeError) as err:
            print(f"gqa-eval-summary: skipping unreadable {path}: {err}", file=sys.stderr)
    return rows


def to_csv(rows: Iterable[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: "" if v is None else v for k, v in r.items()})
    return buf.getvalue()


def write_summary(root: str | Path, out: str | Path | None = None) -> Path:
    """Rebuild ``summary.csv`` for all runs under ``root``; returns its path.

    Args:
        root: folder searched (any depth) for ``result.json``.
        out: folder to write into (default: ``root``).
    """
    root = Path(root)
    out_dir = Path(out) if out is not None else root
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / "summary.csv"
    with open(out_dir / ".summary.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        write_atomic(target, to_csv(read_rows(root)))
    return target


def main(argv: list[str] | None = None) -> int:
    """``gqa-eval-summary DIR [--out OUT]``."""
    parser = argparse.ArgumentParser(
        prog="gqa-eval-summary", description="Collect every result.json under DIR into summary.csv."
    )
    parser.add_argument("dir", type=Path, help="folder of runs or sweeps (searched at any depth)")
    parser.add_argument("--out", type=Path, default=None, help="folder for summary.csv (default: DIR)")
    args = parser.parse_args(argv)
    if not args.dir.is_dir():
        parser.error(f"{args.dir} is not a directory")
    n = len(find_results(args.dir))
    if n == 0:
        print(f"gqa-eval-summary: no result.json under {args.dir}", file=sys.stderr)
        return 1
    path = write_summary(args.dir, args.out)
    print(f"{path}: {n} runs")
    return 0
