"""Report stage: collect every ``result.json`` under a folder into ``summary.csv``, the pivot and plots.

``summary.csv`` has one row per run (variant x task) with the output contract's columns in a fixed
order; ``table.csv``/``table.md`` are the paper's Table 1 as a pivot (``gqa_eval.report.table``);
``quality_vs_time.png`` and ``time_vs_kv_heads.png`` are its Figs. 3 and 6. Failed runs (an
``error.json`` with no ``result.json`` beside it) are listed in ``table.md``, never in the CSV. Jobs
of a sweep never append to a shared file: each writes its own ``result.json``, and the report is
rebuilt by reading them all and replaced file by file atomically (temp file + rename), under a lock
so concurrent rebuilds cannot drop each other's rows. ``gqa-eval-summary DIR [DIR ...] --out OUT``
rebuilds it anywhere, from runs gathered from several places; ``run_dir`` is written relative to the
folder that holds ``summary.csv``.

Shards (``shard=K/N``, one part of a task each) are never rows of their own: a complete set of one
configuration (``result.json``'s ``config`` equal but for ``SHARD_INDEPENDENT``) becomes one row, scored
again over the union of the shards' predictions, its timing combined (``merge_shards``); an incomplete
set is listed in ``table.md`` under "Incomplete shard sets", never in the CSV. ``shards.json`` records
each set, and keeps the merged scores so that a rebuild rescores only sets whose predictions changed.
"""

from __future__ import annotations

import argparse
import csv
import fcntl
import hashlib
import io
import json
import os
import sys
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from gqa_eval.io import write_atomic
from gqa_eval.report.plots import (
    plot_conversion_error,
    plot_conversion_methods,
    plot_quality_vs_time,
    plot_time_vs_kv_heads,
    plot_uptraining,
)
from gqa_eval.report.table import (
    REFERENCES,
    Table,
    metric_column,
    mixed_settings_line,
    pivot,
    to_markdown,
    to_table_csv,
    to_text,
)
from gqa_eval.resume import PREDICTIONS
from gqa_eval.tasks import parse_shard, shard_positions

COLUMNS = [
    "model", "base", "arch", "n_heads", "kv_heads", "conversion", "task", "split", "n_samples",
    "metric", "score",
    "rouge1", "rouge2", "rougeL", "rougeLsum", "bleu", "exact_match", "f1",
    "time_per_sample_s", "prefill_s_per_sample", "decode_s_per_token", "tokens_per_s", "timing_mode",
    "peak_mem_mb", "kv_cache_bytes_per_token", "decode_floor_ratio", "decode_bound", "params", "device",
    "device_name", "threads", "dtype", "batch_size", "run_dir",
    "timing_partial", "max_input_tokens", "max_new_tokens", "shards", "decode_path",
    "uptrain_alpha", "uptrain_steps", "limit", "conversion_error", "uptrain_objective", "uptrain_lr",
]  # fmt: skip
METRIC_COLUMNS = ("rouge1", "rouge2", "rougeL", "rougeLsum", "bleu", "exact_match", "f1")
TIMING_COLUMNS = ("time_per_sample_s", "prefill_s_per_sample", "decode_s_per_token", "tokens_per_s")
PLOTS = (
    "quality_vs_time.png", "time_vs_kv_heads.png", "conversion_methods.png", "uptraining.png",
    "conversion_error.png",
)  # fmt: skip
SHARDS_FILE = "shards.json"
# Config keys in which the shards of one run may differ: the shard itself, and where and how each ran.
# device: the parts of one set may run on different GPUs of a node or cluster (cuda:0, cuda:1, ...)
SHARD_INDEPENDENT = ("shard", "output_root", "resume", "progress", "device")


def report_root(run_dir: Path, sweep_dir: Path | None, output_root: Path) -> Path:
    """Where a finished or failed run's report is rebuilt: its sweep directory in a multirun;
    ``output_root`` for a single run inside it; the run directory itself for a run outside it
    (``hydra.run.dir=ELSEWHERE``), whose results ``gqa-eval-summary DIR ...`` gathers with others."""
    if sweep_dir is not None:
        return Path(sweep_dir)
    if Path(run_dir).resolve().is_relative_to(Path(output_root).resolve()):
        return Path(output_root)
    return Path(run_dir)


def _roots(root: str | Path | Iterable[str | Path]) -> list[Path]:
    """One folder or several, as a list of paths."""
    return [Path(root)] if isinstance(root, (str, os.PathLike)) else [Path(r) for r in root]


def _unique(paths: Iterable[Path]) -> list[Path]:
    """Paths in a stable order, each file once (folders given twice or one inside another)."""
    return sorted({os.path.realpath(p): p for p in paths}.values())


def find_results(root: str | Path | Iterable[str | Path]) -> list[Path]:
    """Every ``result.json`` below ``root`` (one folder or several), in a stable order."""
    return _unique(p for r in _roots(root) for p in r.rglob("result.json"))


def find_failures(root: str | Path | Iterable[str | Path]) -> list[Path]:
    """Every ``error.json`` below ``root`` (one folder or several) whose run directory has no
    ``result.json``."""
    found = (p for r in _roots(root) for p in r.rglob("error.json"))
    return _unique(p for p in found if not (p.parent / "result.json").exists())


def row(result: dict, run_dir: Path | None = None, root: Path | None = None) -> dict:
    """A summary row (the output contract's columns) from one ``result.json``; ``run_dir`` is given
    relative to ``root`` (the folder of ``summary.csv``) when both are known, so a summary stays valid
    when its folder moves."""
    out = {col: result.get(col) for col in COLUMNS}
    if run_dir is not None and root is not None:
        out["run_dir"] = os.path.relpath(run_dir, root)
    scores = result.get("metrics", {})
    for name in METRIC_COLUMNS:
        out[name] = scores.get(name)
    timing = result.get("timing") or {}
    for name in TIMING_COLUMNS:
        if out[name] is None:
            out[name] = timing.get(name)
    out["timing_mode"] = out["timing_mode"] or "natural"  # results from before timing modes
    # a resumed run timed only the examples of its last session (result.json's timing.covers says which)
    out["timing_partial"] = bool(timing.get("partial"))
    environment = result.get("environment") or {}
    for name in ("device_name", "threads"):
        out[name] = environment.get(name)
    if "limit" not in result:  # a run's result.json keeps it in its config (a merged set of shards: on top)
        out["limit"] = (result.get("config") or {}).get("limit")
    # the predictor of the conversion's damage, measured as the variant was made (gqa_eval/variant/damage.py)
    error = (result.get("provenance") or {}).get("conversion_error") or {}
    out["conversion_error"] = error.get("value")
    return out


def _read_json(paths: Iterable[Path]) -> list[tuple[Path, dict]]:
    found = []
    for path in paths:
        try:
            found.append((path, json.loads(path.read_text(encoding="utf-8"))))
        except (OSError, json.JSONDecodeError) as err:
            print(f"gqa-eval-summary: skipping unreadable {path}: {err}", file=sys.stderr)
    return found


@dataclass
class ShardSet:
    """The shards of one configuration and shard count N found in the runs: one run per part K present.
    ``merged`` is the set's result (as ``result.json`` has it, ``shards`` added: "N/N") when it
    is complete and its predictions add up to the whole task; else ``problem`` says why not."""

    n: int
    runs: dict[int, tuple[Path, dict]]  # K -> (run directory, result.json)
    merged: dict | None = None
    problem: str | None = None

    @property
    def missing(self) -> list[int]:
        return [k for k in range(self.n) if k not in self.runs]

    @property
    def first(self) -> dict:
        return next(iter(self.runs.values()))[1]

    def dirs(self, root: Path) -> list[str]:
        """The shards' run directories, in part order, relative to ``root``."""
        return [os.path.relpath(run_dir, root) for _, (run_dir, _) in sorted(self.runs.items())]


def configuration(result: dict) -> str:
    """What the shards of one run share: ``result.json``'s ``config`` without ``SHARD_INDEPENDENT``."""
    config = result.get("config") or {}
    return json.dumps({k: v for k, v in config.items() if k not in SHARD_INDEPENDENT}, sort_keys=True)


def shard_sets(found: Iterable[tuple[Path, dict]]) -> list[ShardSet]:
    """Group sharded results (``result.json`` path, contents) into sets: same configuration and N.
    A part run more than once (a repeat of the whole set) gives further sets: the i-th run of each part,
    in path order, belongs to the i-th set."""
    groups: dict[tuple[str, int], dict[int, list]] = defaultdict(lambda: defaultdict(list))
    for path, result in found:
        k, n = parse_shard(result["shard"])  # type: ignore[misc]
        groups[(configuration(result), n)][k].append((path.parent, result))
    sets = []
    for (_, n), parts in groups.items():
        for i in range(max(len(runs) for runs in parts.values())):
            sets.append(ShardSet(n, {k: runs[i] for k, runs in sorted(parts.items()) if i < len(runs)}))
    return sets


def _predictions_key(s: ShardSet, names: list[str], options: dict) -> str:
    """Identifies the set's predictions files (path, size, modification time) and its metric settings."""
    files = []
    for _, (run_dir, _) in sorted(s.runs.items()):
        stat = (run_dir / PREDICTIONS).stat()
        files.append([os.path.realpath(run_dir / PREDICTIONS), stat.st_size, stat.st_mtime_ns])
    text = json.dumps([files, names, options], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _union(s: ShardSet, total: int) -> list[dict] | str:
    """The shards' prediction rows in task order, or what is wrong with them."""
    rows: dict[int, dict] = {}
    for k, (run_dir, _) in sorted(s.runs.items()):
        try:
            lines = (run_dir / PREDICTIONS).read_text(encoding="utf-8").splitlines()
            got = {int(r["index"]): r for r in map(json.loads, lines)}
        except (OSError, ValueError, KeyError, TypeError) as err:
            return f"shard {k}/{s.n}: {PREDICTIONS} cannot be read ({err})"
        if sorted(got) != shard_positions(total, (k, s.n)):
            return (
                f"shard {k}/{s.n}: {PREDICTIONS} has {len(got)} rows, not examples {k}, {k + s.n}, ... of "
                f"the task's {total}"
            )
        rows.update(got)
    return [rows[i] for i in range(total)]


def _weighted(pairs: Iterable[tuple[float | None, float | None]]) -> float | None:
    """Mean of values by weight (pairs of value, weight; zero weights left out); None if one is missing."""
    pairs = [(v, w) for v, w in pairs if w != 0]
    if not pairs or any(v is None or w is None for v, w in pairs):
        return None
    return sum(v * w for v, w in pairs) / sum(w for _, w in pairs)  # type: ignore[operator]


def _total(values: Iterable) -> float | None:
    values = list(values)
    return None if None in values else sum(values)


def _common(values: Iterable):
    """The shards' one value, or their values joined when they differ (devices of different jobs); an
    empty shard's None (no decode step, no bound) is left out."""
    distinct = list(dict.fromkeys(v for v in values if v is not None))
    if len(distinct) <= 1:
        return distinct[0] if distinct else None
    return ", ".join(sorted(map(str, distinct)))


def merge_shards(s: ShardSet, cache: dict[str, dict] | None = None) -> None:
    """Set ``s.merged`` (or ``s.problem``): the whole task's result from its shards.

    The metrics are computed again (``metrics.score_with_details``, as ``evaluate`` calls it, with the
    task's metrics and metric options from the config) over the union of the shards' predictions, in
    task order: they equal an unsharded run's. Timing is combined: time per sample = total timed time /
    total timed samples; tokens/s = total tokens / total time; prefill per sample = total prefill time /
    total samples; decode s/token and the floor ratio = the shards' medians weighted by their decode
    steps; peak memory = the largest. ``cache`` (predictions key -> earlier merged scores) spares
    rescoring predictions that have not changed.
    """
    if s.missing:
        missing = ", ".join(f"{k}/{s.n}" for k in s.missing)
        s.problem = f"shard{'s' if len(s.missing) > 1 else ''} {missing} missing"
        return
    results = [result for _, (_, result) in sorted(s.runs.items())]
    first, total = results[0], results[0].get("task_samples")
    if not isinstance(total, int) or any(r.get("task_samples") != total for r in results):
        s.problem = "the shards disagree on the task's size (task_samples)"
        return
    task = first["config"]["task"]
    names, options = list(task["metrics"]), dict(task.get("metric_options") or {})
    try:
        key = _predictions_key(s, names, options)
    except OSError as err:
        s.problem = f"a shard's {PREDICTIONS} cannot be read ({err})"
        return
    cached = (cache or {}).get(key)
    if cached is not None:
        scores, details = cached["metrics"], cached["metric_details"]
    else:
        union = _union(s, total)
        if isinstance(union, str):
            s.problem = union
            return
        from gqa_eval import metrics  # the scorers load nltk and rouge-score: only when there is work

        preds, refs = [r["prediction"] for r in union], [r["references"] for r in union]
        scores, details = metrics.score_with_details(names, preds, refs, **options)
    timings = [r.get("timing") or {} for r in results]
    seconds, samples, tokens = (
        _total(t.get(k) for t in timings) for k in ("total_s", "timed_samples", "generated_tokens")
    )
    timed = [t.get("timed_samples") for t in timings]
    steps = [t.get("decode_steps") for t in timings]
    memory = [r["peak_mem_mb"] for r in results if r.get("peak_mem_mb") is not None]
    environment = [r.get("environment") or {} for r in results]

    def by(name: str, weights: list) -> float | None:
        return _weighted(zip((r.get(name) for r in results), weights, strict=True))

    s.merged = {
        **{col: first.get(col) for col in COLUMNS},  # the variant, task, settings: the same in every shard
        "n_samples": total,
        "task_samples": total,
        "limit": (first.get("config") or {}).get("limit"),  # the same in every shard (their configuration)
        "shard": None,
        "shards": f"{s.n}/{s.n}",
        "score": scores[first["metric"]],
        "metrics": scores,
        "metric_details": details,
        "time_per_sample_s": seconds / samples if seconds is not None and samples else None,
        "tokens_per_s": tokens / seconds if tokens is not None and seconds else None,
        "prefill_s_per_sample": by("prefill_s_per_sample", timed),
        "decode_s_per_token": by("decode_s_per_token", steps),
        "decode_floor_ratio": by("decode_floor_ratio", steps),
        "decode_bound": _common(r.get("decode_bound") for r in results),
        "peak_mem_mb": max(memory) if memory else None,
        "device": _common(r.get("device") for r in results),
        "timing": {
            "mode": first.get("timing_mode"),
            "partial": any(t.get("partial") for t in timings),  # a shard was resumed
            "total_s": seconds,
            "timed_samples": samples,
            "generated_tokens": tokens,
            "decode_steps": _total(steps),
        },
        "environment": {k: _common(e.get(k) for e in environment) for k in ("device_name", "threads")},
        "predictions_key": key,
    }


def read_runs(
    root: str | Path | Iterable[str | Path],
    relative_to: str | Path | None = None,
    cache: dict[str, dict] | None = None,
) -> tuple[list[dict], list[ShardSet]]:
    """Summary rows of every readable ``result.json`` under ``root`` (one folder or several), a complete
    set of shards as one merged row (where its first shard was found), and every set of shards;
    ``run_dir`` relative to ``relative_to`` (default: the one root). Unreadable results are reported,
    not fatal."""
    base = Path(relative_to if relative_to is not None else _roots(root)[0])
    found = []
    for path, result in _read_json(find_results(root)):
        try:
            parse_shard(result.get("shard"))
        except ValueError as err:
            print(f"gqa-eval-summary: skipping {path}: {err}", file=sys.stderr)
            continue
        found.append((path, result))
    sets = shard_sets((path, result) for path, result in found if result.get("shard"))
    of_path = {run_dir / "result.json": s for s in sets for run_dir, _ in s.runs.values()}
    rows, done = [], set()
    for path, result in found:
        s = of_path.get(path)
        if s is None:  # an unsharded run
            rows.append(row(result, path.parent, base))
        elif id(s) not in done:
            done.add(id(s))
            merge_shards(s, cache)
            if s.merged is not None:
                rows.append({**row(s.merged), "run_dir": ";".join(s.dirs(base))})
    return rows, sets


def read_rows(root: str | Path | Iterable[str | Path], relative_to: str | Path | None = None) -> list[dict]:
    """Rows of every readable ``result.json`` under ``root`` (one folder or several), a complete set of
    shards as one row, ``run_dir`` relative to ``relative_to`` (default: the one root); unreadable ones
    are reported, not fatal."""
    return read_runs(root, relative_to)[0]


def incomplete_sets(sets: Iterable[ShardSet], root: Path) -> list[dict]:
    """The sets of shards with no merged row, as ``table.md`` lists them."""
    return [
        {
            **{k: s.first.get(k) for k in ("model", "base", "task", "kv_heads")},
            "shards": f"{len(s.runs)}/{s.n}",
            "problem": s.problem,
            "run_dir": ";".join(s.dirs(root)),
        }
        for s in sets
        if s.merged is None
    ]


def _shards_record(sets: list[ShardSet], root: Path) -> str:
    """``shards.json``: every set of shards, its runs and, when merged, its metrics and combined timing."""
    record = []
    for s in sets:
        entry = {
            **{k: s.first.get(k) for k in ("model", "base", "kv_heads", "conversion", "task", "split")},
            "shards": f"{len(s.runs)}/{s.n}",
            "complete": s.merged is not None,
            "problem": s.problem,
            "run_dirs": {f"{k}/{s.n}": d for k, d in zip(sorted(s.runs), s.dirs(root), strict=True)},
        }
        if s.merged is not None:
            keys = ["n_samples", "metric", "score", "metrics", "metric_details", *TIMING_COLUMNS]
            entry.update({k: s.merged[k] for k in [*keys, "peak_mem_mb", "timing", "predictions_key"]})
        record.append(entry)
    return json.dumps({"sets": record}, indent=2, ensure_ascii=False) + "\n"


def _read_cache(path: Path) -> dict[str, dict]:
    """Merged scores in an earlier ``shards.json``, by predictions key."""
    try:
        sets = json.loads(path.read_text(encoding="utf-8"))["sets"]
        return {e["predictions_key"]: e for e in sets if e.get("predictions_key") and "metrics" in e}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def read_failures(
    root: str | Path | Iterable[str | Path], relative_to: str | Path | None = None
) -> list[dict]:
    """The failed runs under ``root`` (``error.json`` without ``result.json``), run_dir made relative
    to ``relative_to`` (default: the one root)."""
    base = relative_to if relative_to is not None else _roots(root)[0]
    return [
        {**error, "run_dir": os.path.relpath(path.parent, base)}
        for path, error in _read_json(find_failures(root))
    ]


def to_csv(rows: Iterable[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: "" if v is None else v for k, v in r.items()})
    return buf.getvalue()


@dataclass
class Report:
    """What ``write_report`` built and wrote."""

    rows: list[dict]
    failures: list[dict]
    table: Table
    files: list[Path] = field(default_factory=list)
    incomplete: list[dict] = field(default_factory=list)  # sets of shards with no merged row

    @property
    def warning(self) -> str | None:
        """One line naming the settings in which the runs differ, if they do."""
        return mixed_settings_line(self.table)

    @property
    def text(self) -> str:
        """The pivot and failed runs, aligned for a terminal."""
        return to_text(self.table, self.failures, self.incomplete)


def write_report(
    root: str | Path | Iterable[str | Path],
    out: str | Path | None = None,
    *,
    reference: str | None = None,
    metric: str = "average",
) -> Report:
    """Rebuild ``summary.csv``, ``table.csv``, ``table.md`` and both plots from the runs under ``root``.

    Args:
        root: a folder, or several, searched (any depth) for ``result.json`` and ``error.json``; a run
            found twice (nested or repeated folders) counts once.
        out: folder to write into (default: ``root``; required with several folders). ``run_dir`` in
            the report is relative to it.
        reference: ``"paper"`` adds the paper's published Table 1 rows to the table (not the CSV).
        metric: ``"average"`` or a task: what ``quality_vs_time.png`` plots against time.

    Raises:
        ValueError: ``metric`` names no task in the results, ``reference`` is unknown, or several
            folders were given without ``out``.
    """
    roots = _roots(root)
    if out is None and len(roots) != 1:
        raise ValueError("several folders of runs need --out OUT, the folder to write the report into")
    out_dir = Path(out) if out is not None else roots[0]
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / ".summary.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        rows, sets = read_runs(roots, out_dir, _read_cache(out_dir / SHARDS_FILE))
        failures, incomplete = read_failures(roots, out_dir), incomplete_sets(sets, out_dir)
        table = pivot(rows, reference)
        column = metric_column(table, metric)
        wheres = [os.path.relpath(r, out_dir) for r in roots]
        where = ", ".join("this folder" if w == "." else f"`{w}`" for w in wheres)
        runs = f"{len(rows)} run" + ("" if len(rows) == 1 else "s")
        merged = len(sets) - len(incomplete)
        source = f"Built from {runs} (every `result.json` under {where}" + (
            f"; {merged} complete set{'s' if merged > 1 else ''} of shards, one row each)" if merged else ")"
        )
        below = [f"failed runs ({len(failures)})"] if failures else []
        below += [f"incomplete sets of shards ({len(incomplete)})"] if incomplete else []
        source += f"; {' and '.join(below)} are listed below." if below else "."
        outputs = {
            "summary.csv": to_csv(rows),
            "table.csv": to_table_csv(table),
            "table.md": to_markdown(table, failures, source, incomplete),
            PLOTS[0]: plot_quality_vs_time(table, column),
            PLOTS[1]: plot_time_vs_kv_heads(table, column),
            PLOTS[2]: plot_conversion_methods(table, column),
            PLOTS[3]: plot_uptraining(table, column),
            PLOTS[4]: plot_conversion_error(table, column),
        }
        if sets:
            outputs[SHARDS_FILE] = _shards_record(sets, out_dir)
        else:
            (out_dir / SHARDS_FILE).unlink(missing_ok=True)  # no shards (left) under these folders
        files = []
        for name, data in outputs.items():
            write_atomic(out_dir / name, data)
            files.append(out_dir / name)
    return Report(rows, failures, table, files, incomplete)


def write_summary(root: str | Path | Iterable[str | Path], out: str | Path | None = None, **options) -> Path:
    """Rebuild the whole report for all runs under ``root`` (see ``write_report``); returns the path of
    its ``summary.csv``."""
    return write_report(root, out, **options).files[0]


def main(argv: list[str] | None = None) -> int:
    """``gqa-eval-summary DIR [DIR ...] [--out OUT] [--reference paper] [--metric average|TASK]``."""
    parser = argparse.ArgumentParser(
        prog="gqa-eval-summary",
        description="Collect every result.json under DIR (or several DIRs) into summary.csv, the Table-1 "
        "pivot (table.csv, table.md) and the quality-vs-cost plots.",
    )
    parser.add_argument(
        "dirs", nargs="+", type=Path, metavar="DIR", help="folder of runs or sweeps (searched at any depth)"
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="folder to write into (default: DIR; required with several)"
    )
    parser.add_argument(
        "--reference",
        choices=REFERENCES,
        default=None,
        help="add published rows (the paper's Table 1)",
    )
    parser.add_argument(
        "--metric", default="average", help="quality axis of quality_vs_time.png: average (default) or a task"
    )
    args = parser.parse_args(argv)
    for d in args.dirs:
        if not d.is_dir():
            parser.error(f"{d} is not a directory")
    if len(args.dirs) > 1 and args.out is None:
        parser.error("with several DIRs, --out OUT is required (the folder to write the report into)")
    where = " or ".join(map(str, args.dirs))
    if not find_results(args.dirs):
        n_failed = len(find_failures(args.dirs))
        failed = f" ({n_failed} failed runs with error.json)" if n_failed else ""
        print(
            f"gqa-eval-summary: no result.json under {where}{failed}; nothing to summarise", file=sys.stderr
        )
        return 1
    try:
        built = write_report(args.dirs, args.out, reference=args.reference, metric=args.metric)
    except ValueError as err:
        parser.error(str(err))
    if built.warning:
        print(f"gqa-eval-summary: warning: {built.warning}", file=sys.stderr)
    out_dir = built.files[0].parent
    failed = f", {len(built.failures)} failed" if built.failures else ""
    failed += f", {len(built.incomplete)} incomplete sets of shards" if built.incomplete else ""
    print(f"gqa-eval-summary: {len(built.rows)} runs{failed}; wrote to {out_dir}/:")
    print("  " + ", ".join(p.name for p in built.files))
    print()
    print(built.text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
