"""Run-directory state: what a run is (its fingerprint) and what it has already predicted.

A run directory holds ``fingerprint.json`` (written before the first prediction) and
``predictions.jsonl`` (appended and flushed per batch). A run started again in the same directory
reuses the predictions only if its fingerprint matches part by part: the variant (checkpoint id,
revision and weight-file hashes, kv_heads, conversion method and seed), the task (data source,
revision, split, fields, templates, lengths, metrics, the examples' ids, the shard) and the generation
settings. Otherwise it refuses, naming the part and the keys that differ. A last line torn by a kill
mid-write is dropped and its example predicted again, so there are no duplicated and no lost rows. Rows
are keyed by ``index``, the example's position in the whole task (a shard's too).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from gqa_eval.io import write_atomic
from gqa_eval.paths import resolve
from gqa_eval.tasks import parse_shard, shard_text

PREDICTIONS = "predictions.jsonl"
FINGERPRINT = "fingerprint.json"


class ResumeError(ValueError):
    """A run directory's earlier predictions cannot be reused."""


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, cached by (path, size, mtime) so multi-GB checkpoints are hashed once."""
    from gqa_eval.roofline import cache_dir

    stat = path.stat()
    key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    cache_file = cache_dir() / "file_hashes.json"
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, json.JSONDecodeError):
        cache = {}
    if key not in cache:
        digest = hashlib.sha256()
        with path.open("rb") as f:
            while chunk := f.read(1 << 24):
                digest.update(chunk)
        cache[key] = digest.hexdigest()
        write_atomic(cache_file, json.dumps(cache, indent=1))
    return cache[key]


def weight_hashes(path_or_id: str) -> dict[str, str]:
    """SHA-256 of each weight file of a local checkpoint (empty for a hub id: its revision pins it)."""
    root = resolve(path_or_id)
    if not root.is_dir():
        return {}
    files = sorted(p for p in root.iterdir() if p.suffix in (".safetensors", ".bin", ".pt", ".pth"))
    return {p.name: file_sha256(p) for p in files}


def _calibrated(conversion: str | None) -> bool:
    from gqa_eval.variant.heads import uses_calibration

    return conversion is not None and uses_calibration(conversion)


def fingerprint(
    cfg: Mapping[str, Any], task: Mapping[str, Any], example_ids: Sequence[str]
) -> dict[str, Any]:
    """What makes two runs' predictions interchangeable, in three named parts."""
    base, model = cfg["base"], cfg["model"]
    source = model.get("checkpoint") or base["path"]
    ids = hashlib.sha256("\n".join(example_ids).encode()).hexdigest()
    return {
        "variant": {
            "checkpoint": str(source),
            "revision": base.get("revision"),
            "weights": weight_hashes(str(source)),
            "kv_heads": model.get("kv_heads"),
            "conversion": model.get("conversion"),
            "seed": cfg["seed"],
            # the calibrated conversions (aligned, clustered) also depend on their calibration set
            **({"calibration": model.get("calibration")} if _calibrated(model.get("conversion")) else {}),
        },
        "task": {
            "name": task["name"],
            "data": task["data"],
            "split": task["split"],
            "fields": task["fields"],
            "input_template": task["input_template"],
            "prompt_template": task["prompt_template"],
            "truncate": task["truncate"],
            "stop_strings": list(task.get("stop_strings") or []),
            "max_input_tokens": task["max_input_tokens"],
            "examples": f"{len(example_ids)} ids, sha256 {ids}",
            # which part of the task they are (K/N; null: all of it): rows keep the task's index
            "shard": shard_text(parse_shard(cfg.get("shard"))),
        },
        "generation": {
            "max_new_tokens": task["max_new_tokens"],
            "batch_size": cfg["batch_size"],
            "dtype": cfg["dtype"],
            "device": cfg["device"],
            "decoding": "greedy",
            "chat_template": cfg["base"].get("chat_template", "auto"),
        },
    }


def _differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new)):
            out += _differences(old.get(key), new.get(key), f"{prefix}.{key}" if prefix else key)
        return out
    return [] if old == new else [f"{prefix}: {old!r} -> {new!r}"]


def load_predictions(run_dir: Path, current: dict[str, Any]) -> dict[int, dict]:
    """Predictions already in ``run_dir`` that this run may reuse, by example index.

    Writes ``fingerprint.json`` for a fresh directory; truncates a torn last line.

    Raises:
        ResumeError: the directory holds predictions of a run with another fingerprint, or a corrupt row.
    """
    pred_path, fp_path = run_dir / PREDICTIONS, run_dir / FINGERPRINT
    if fp_path.is_file():
        old = json.loads(fp_path.read_text())
        differing = {part: _differences(old.get(part), current[part]) for part in current}
        differing = {part: diff for part, diff in differing.items() if diff}
        if differing:
            detail = "; ".join(
                f"the {part} differs ({', '.join(diff[:3])})" for part, diff in differing.items()
            )
            raise ResumeError(
                f"cannot resume in {run_dir}: its predictions come from another run: {detail}. "
                "Run in a new directory (drop hydra.run.dir / resume=) or restore the original settings"
            )
    elif pred_path.exists() and pred_path.stat().st_size:
        raise ResumeError(
            f"{pred_path} exists but {fp_path.name} does not, so nothing says which run wrote it; "
            "move it away or run in a new directory"
        )
    else:
        fp_path.write_text(json.dumps(current, indent=2, ensure_ascii=False) + "\n")
    if not pred_path.exists():
        return {}
    raw = pred_path.read_bytes()
    complete = raw[: raw.rfind(b"\n") + 1]  # a last line without its newline was torn by a kill
    if len(complete) != len(raw):
        with pred_path.open("r+b") as f:
            f.truncate(len(complete))
    done: dict[int, dict] = {}
    for n, line in enumerate(complete.decode("utf-8").splitlines(), 1):
        try:
            row = json.loads(line)
            done[int(row["index"])] = row
        except (json.JSONDecodeError, KeyError, ValueError) as err:
            raise ResumeError(
                f"{pred_path} line {n} is not a prediction row ({err}); move the file away"
            ) from None
    return done
