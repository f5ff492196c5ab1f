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
"""

from __future__ import annotations

import argparse
import csv
import fcntl
import io
import json
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from gqa_eval.io import write_atomic
from gqa_eval.report.plots import plot_quality_vs_time, plot_time_vs_kv_heads
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

COLUMNS = [
    "model", "base", "arch", "n_heads", "kv_heads", "conversion", "task", "split", "n_samples",
    "metric", "score",
    "rouge1", "rouge2", "rougeL", "rougeLsum", "bleu", "exact_match", "f1",
    "time_per_sample_s", "prefill_s_per_sample", "decode_s_per_token", "tokens_per_s", "timing_mode",
    "peak_mem_mb", "kv_cache_bytes_per_token", "decode_floor_ratio", "decode_bound", "params", "device",
    "device_name", "threads", "dtype", "batch_size", "run_dir",
    "timing_partial", "max_input_tokens", "max_new_tokens",
]  # fmt: skip
METRIC_COLUMNS = ("rouge1", "rouge2", "rougeL", "rougeLsum", "bleu", "exact_match", "f1")
TIMING_COLUMNS = ("time_per_sample_s", "prefill_s_per_sample", "decode_s_per_token", "tokens_per_s")
PLOTS = ("quality_vs_time.png", "time_vs_kv_heads.png")


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
    return out


def _read_json(paths: Iterable[Path]) -> list[tuple[Path, dict]]:
    found = []
    for path in paths:
        try:
            found.append((path, json.loads(path.read_text(encoding="utf-8"))))
        except (OSError, json.JSONDecodeError) as err:
            print(f"gqa-eval-summary: skipping unreadable {path}: {err}", file=sys.stderr)
    return found


def read_rows(root: str | Path | Iterable[str | Path], relative_to: str | Path | None = None) -> list[dict]:
    """Rows of every readable ``result.json`` under ``root`` (one folder or several), ``run_dir``
    relative to ``relative_to`` (default: the one root); unreadable ones are reported, not fatal."""
    base = relative_to if relative_to is not None else _roots(root)[0]
    return [row(result, path.parent, base) for path, result in _read_json(find_results(root))]


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

    @property
    def warning(self) -> str | None:
        """One line naming the settings in which the runs differ, if they do."""
        return mixed_settings_line(self.table)

    @property
    def text(self) -> str:
        """The pivot and failed runs, aligned for a terminal."""
        return to_text(self.table, self.failures)


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
        rows, failures = read_rows(roots, out_dir), read_failures(roots, out_dir)
        table = pivot(rows, reference)
        column = metric_column(table, metric)
        wheres = [os.path.relpath(r, out_dir) for r in roots]
        where = ", ".join("this folder" if w == "." else f"`{w}`" for w in wheres)
        runs = f"{len(rows)} run" + ("" if len(rows) == 1 else "s")
        source = f"Built from {runs} (every `result.json` under {where})" + (
            f"; failed runs ({len(failures)}) are listed below." if failures else "."
        )
        outputs = {
            "summary.csv": to_csv(rows),
            "table.csv": to_table_csv(table),
            "table.md": to_markdown(table, failures, source),
            PLOTS[0]: plot_quality_vs_time(table, column),
            PLOTS[1]: plot_time_vs_kv_heads(table, column),
        }
        files = []
        for name, data in outputs.items():
            write_atomic(out_dir / name, data)
            files.append(out_dir / name)
    return Report(rows, failures, table, files)


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
    print(f"gqa-eval-summary: {len(built.rows)} runs{failed}; wrote to {out_dir}/:")
    print("  " + ", ".join(p.name for p in built.files))
    print()
    print(built.text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
