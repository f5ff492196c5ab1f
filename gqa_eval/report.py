"""Summary stage, the readable part: the paper's Table 1 as a pivot of summary rows, and its text forms.

``pivot(rows)`` turns the long-format summary rows (one per run) into one row per variant (base, model,
kv_heads, conversion): T_infer, the plain mean of the primary scores present, then each task's score,
repeats averaged and counted; ``published_rows()`` are the paper's own rows, kept apart. ``to_markdown``,
``to_table_csv`` and ``to_text`` render it. Nothing here reads or writes files (``summary.py`` does).
"""

from __future__ import annotations

import csv
import io
import statistics
from collections import defaultdict
from dataclasses import dataclass, field

# (task, primary metric) -> column label, in the order of the paper's Table 1 (arXiv 2305.13245).
PAPER_COLUMNS = {
    ("cnn_dm", "rouge1"): "CNN R1",
    ("arxiv", "rouge1"): "arXiv R1",
    ("pubmed", "rouge1"): "PubMed R1",
    ("mediasum", "rouge1"): "MediaSum R1",
    ("multi_news", "rouge1"): "MultiNews R1",
    ("wmt_en_de", "bleu"): "WMT BLEU",
    ("trivia_qa", "f1"): "TriviaQA F1",
}
PUBLISHED = "published (TPUv4)"
# Ainslie et al. 2023, "GQA: Training Generalized Multi-Query Transformer Models from Multi-Head
# Checkpoints", arXiv 2305.13245, Table 1: dev-set scores; T_infer = seconds per sample per TPUv4 chip.
# MQA/GQA rows are T5-XXL uptrained with alpha = 0.05. Averages are the printed ones: MQA's 46.6 and
# GQA-8's 47.1 are not the plain means of their cells (46.76 and 47.16).
PAPER_TABLE1 = [
    # label, n_heads, kv_heads, T_infer, Average, CNN, arXiv, PubMed, MediaSum, MultiNews, WMT, TriviaQA
    ("T5-Large MHA", 16, 16, 0.37, 46.0, 42.9, 44.6, 46.2, 35.5, 46.6, 27.7, 78.2),
    ("T5-XXL MHA", 64, 64, 1.51, 47.2, 43.8, 45.6, 47.5, 36.4, 46.9, 28.4, 81.9),
    ("T5-XXL MQA", 64, 1, 0.24, 46.6, 43.0, 45.0, 46.9, 36.1, 46.5, 28.5, 81.3),
    ("T5-XXL GQA-8", 64, 8, 0.28, 47.1, 43.5, 45.4, 47.7, 36.3, 47.2, 28.4, 81.6),
]
REFERENCES = ("paper",)
TABLE_CSV_HEAD = [
    "variant", "source", "model", "base", "arch", "n_heads", "kv_heads", "conversion", "device",
    "timing_mode", "t_infer_s", "average", "n_tasks", "n_runs", "kv_cache_bytes_per_token",
]  # fmt: skip


@dataclass
class Column:
    """One task's primary score: ``key`` names it in table.csv, ``label`` in table.md."""

    task: str
    metric: str

    @property
    def key(self) -> str:
        return f"{self.task}_{self.metric}"

    @property
    def label(self) -> str:
        return PAPER_COLUMNS.get((self.task, self.metric), f"{self.task} {self.metric}")


@dataclass
class Cell:
    """A (variant, task) cell: mean primary score over its runs, how many, and their mean time."""

    score: float
    n: int
    time_s: float | None = None


@dataclass
class Variant:
    """One row of the pivot."""

    label: str
    model: str | None
    base: str | None
    arch: str | None
    n_heads: int | None
    kv_heads: int | None
    conversion: str | None
    source: str = "computed"
    cells: dict[str, Cell] = field(default_factory=dict)
    t_infer: float | None = None
    timing_mode: str | None = None
    mixed_timing: bool = False
    average: float | None = None
    n_runs: int = 0
    kv_bytes: float | None = None
    device: str = ""

    @property
    def n_tasks(self) -> int:
        return len(self.cells)

    @property
    def kind(self) -> str:
        """MHA, MQA or GQA-G (the paper's names), from the head counts."""
        if self.kv_heads is None or self.n_heads is None:
            return str(self.model)
        if self.kv_heads == self.n_heads:
            return "MHA"
        return "MQA" if self.kv_heads == 1 else f"GQA-{self.kv_heads}"


@dataclass
class Table:
    """The pivot: task columns in the paper's order, computed rows, then any published rows."""

    columns: list[Column]
    variants: list[Variant]


def mean_of(values) -> float | None:
    """Mean of the values that are not None; None if there are none."""
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def _column_order(col: Column) -> tuple:
    order = list(PAPER_COLUMNS)
    pair = (col.task, col.metric)
    return (order.index(pair), "", "") if pair in order else (len(order), col.task, col.metric)


def _timing_mode(row: dict) -> str:
    return row.get("timing_mode") or "natural"


def _variant(runs: list[dict]) -> Variant:
    first = runs[0]
    v = Variant(
        label="",
        **{k: first.get(k) for k in ("model", "base", "arch", "n_heads", "kv_heads", "conversion")},
    )
    v.n_runs = len(runs)
    v.device = ", ".join(sorted({str(r.get("device")) for r in runs if r.get("device")}))
    kv_bytes = mean_of(r.get("kv_cache_bytes_per_token") for r in runs)
    v.kv_bytes = int(kv_bytes) if kv_bytes is not None and kv_bytes.is_integer() else kv_bytes
    modes = {_timing_mode(r) for r in runs}
    # Fixed-length timing (every sample decodes the same number of tokens) compares variants on equal
    # work, so it is preferred for T_infer where a variant has both.
    v.timing_mode = "fixed" if "fixed" in modes else "natural"
    v.mixed_timing = len(modes) > 1
    by_cell: dict[tuple, list[dict]] = defaultdict(list)
    for r in runs:
        by_cell[(r["task"], r["metric"])].append(r)
    for (task, metric), cell_runs in by_cell.items():
        timed = [r.get("time_per_sample_s") for r in cell_runs if _timing_mode(r) == v.timing_mode]
        v.cells[Column(task, metric).key] = Cell(
            score=statistics.fmean(float(r["score"]) for r in cell_runs),
            n=len(cell_runs),
            time_s=mean_of(timed),
        )
    v.t_infer = mean_of(c.time_s for c in v.cells.values())
    v.average = statistics.fmean(c.score for c in v.cells.values())
    return v


def _label(v: Variant) -> str:
    label = f"{v.base} {v.kind}"
    return f"{label} ({v.conversion})" if v.conversion else label


def published_rows() -> list[Variant]:
    """The paper's Table 1 rows (see ``PAPER_TABLE1``), marked as published."""
    columns = [Column(task, metric) for task, metric in PAPER_COLUMNS]
    rows = []
    for label, n_heads, kv_heads, t_infer, average, *scores in PAPER_TABLE1:
        v = Variant(label, None, label.split()[0], "t5", n_heads, kv_heads, None, source=PUBLISHED)
        v.cells = {c.key: Cell(score=s, n=0) for c, s in zip(columns, scores, strict=True)}
        v.t_infer, v.average, v.timing_mode, v.device = t_infer, average, None, "TPUv4"
        rows.append(v)
    return rows


def pivot(rows: list[dict], reference: str | None = None) -> Table:
    """One row per variant from summary rows (one per run); ``reference="paper"`` appends Table 1.

    Args:
        rows: summary rows with at least model, base, n_heads, kv_heads, conversion, task, metric,
            score, time_per_sample_s (and optionally timing_mode, device, kv_cache_bytes_per_token).
        reference: None, or ``"paper"`` to add the paper's published rows (never averaged with ours).
    """
    if reference not in (None, *REFERENCES):
        raise ValueError(f"unknown reference {reference!r}; choose from {list(REFERENCES)}")
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        if r.get("score") is None or not r.get("task"):
            continue
        groups[(r.get("base"), r.get("model"), r.get("kv_heads"), r.get("conversion"))].append(r)
    variants = [_variant(runs) for runs in groups.values()]
    for v in variants:
        v.label = _label(v)
    counts = defaultdict(int)
    for v in variants:
        counts[v.label] += 1
    for v in variants:  # e.g. model=mqa and model=gqa model.kv_heads=1 are the same geometry
        if counts[v.label] > 1:
            v.label += f" [{v.model}]"
    variants.sort(key=lambda v: (str(v.base), -(v.kv_heads or 0), v.conversion or "", str(v.model)))
    if reference == "paper":
        variants += published_rows()
    keys = {(r["task"], r["metric"]) for r in rows if r.get("score") is not None and r.get("task")}
    if reference == "paper":
        keys |= set(PAPER_COLUMNS)
    return Table(sorted((Column(*k) for k in keys), key=_column_order), variants)


def metric_column(table: Table, metric: str) -> Column | None:
    """The column that ``--metric`` names (a task, or ``task_metric``); None for ``average``."""
    if metric == "average":
        return None
    for col in table.columns:
        if metric in (col.task, col.key):
            return col
    choices = ["average", *dict.fromkeys(c.task for c in table.columns)]
    raise ValueError(f"--metric {metric!r} is not in the results; choose from {choices}")


def _num(x: float | None, spec: str) -> str:
    return "" if x is None else format(x, spec)


def _cells(table: Table) -> tuple[list[str], list[list[str]]]:
    """Header and body of the human-readable table (table.md and the terminal)."""
    header = ["Model", "T_infer (s)", "Average", *(c.label for c in table.columns)]
    body = []
    total = len(table.columns)
    for v in table.variants:
        published = v.source == PUBLISHED
        score_spec, time_spec = (".1f", ".2f") if published else (".2f", "#.3g")
        t_infer = _num(v.t_infer, time_spec) or "—"
        average = f"{_num(v.average, score_spec)} ({v.n_tasks}/{total})" if v.average is not None else "—"
        line = [f"{v.label} (published, TPUv4)" if published else v.label, t_infer, average]
        for col in table.columns:
            cell = v.cells.get(col.key)
            if cell is None:
                line.append("—")
            else:
                line.append(_num(cell.score, score_spec) + (f" (n={cell.n})" if cell.n > 1 else ""))
        body.append(line)
    return header, body


def _align(header: list[str], body: list[list[str]], markdown: bool, numbers: bool = True) -> str:
    """Pad columns to a common width: the first left-aligned, the others right-aligned if ``numbers``."""
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    right = [bool(i) and numbers for i in range(len(widths))]

    def fmt(cells: list[str]) -> str:
        padded = [c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right, strict=True)]
        return "| " + " | ".join(padded) + " |" if markdown else "  ".join(padded)

    if markdown:
        rule = "|".join(
            "-" * (w + 1) + ":" if r else ":" + "-" * (w + 1) for w, r in zip(widths, right, strict=True)
        )
        rule = f"|{rule}|"
    else:
        rule = "  ".join("-" * w for w in widths)
    return "\n".join([fmt(header), rule, *(fmt(r) for r in body)])


def failures_text(failures: list[dict], markdown: bool) -> str:
    """The failed runs as a table: model, base, task, kv_heads, error and its run directory."""
    header = ["model", "base", "task", "kv_heads", "error", "run_dir"]
    body = []
    for f in failures:
        message = str(f.get("message") or "").strip().splitlines()
        error = f"{f.get('error_type') or 'error'}: {message[0][:160] if message else ''}"
        cells = [f.get("model"), f.get("base"), f.get("task"), f.get("kv_heads"), error, f.get("run_dir")]
        text = ["" if c is None else str(c).replace("\n", " ") for c in cells]
        body.append([c.replace("|", "\\|") for c in text] if markdown else text)
    return _align(header, body, markdown, numbers=False)


def _notes(table: Table) -> list[str]:
    computed = [v for v in table.variants if v.source != PUBLISHED]
    devices = sorted({v.device for v in computed if v.device})
    notes = [
        "Average: plain mean of the primary scores present in the row (R1, BLEU, F1 on a 0-100 scale, "
        "as the paper averages them); (k/N) = over k of the N task columns. — = no run.",
        "Repeats of a variant and task are averaged; (n=K) = mean of K runs. Every run is in summary.csv.",
        "T_infer: seconds per sample on "
        + (", ".join(devices) or "the run's device")
        + "; the mean over the row's tasks of each task's mean over its runs.",
    ]
    mixed = [v.label for v in computed if v.mixed_timing]
    if mixed:
        notes.append(
            "T_infer uses only the fixed-timing runs (timing_mode=fixed) of "
            + ", ".join(mixed)
            + ", which also have natural-timing runs."
        )
    modes = {v.timing_mode for v in computed}
    if len(modes) > 1:
        fixed = [v.label for v in computed if v.timing_mode == "fixed"]
        notes.append(
            "Timing modes differ between rows (fixed: " + ", ".join(fixed) + "; natural: the others); "
            "their T_infer are not directly comparable."
        )
    if any(v.source == PUBLISHED for v in table.variants):
        notes.append(
            "Published rows: Ainslie et al. 2023, arXiv 2305.13245, Table 1 (dev sets; T5.1.1, MQA/GQA "
            "uptrained with alpha=0.05); T_infer is seconds per sample per TPUv4 chip, not comparable with "
            "ours, and their Average is the printed one (MQA's 46.6 and GQA-8's 47.1 are not the plain "
            "means of their cells, 46.76 and 47.16). They are never mixed into computed averages."
        )
    return notes


def to_markdown(table: Table, failures: list[dict], source: str = "") -> str:
    """``table.md``: the aligned pivot, notes, and a "Failed runs" section when any failed."""
    parts = ["# Results: quality vs. cost (the GQA paper's Table 1 layout)", ""]
    if source:
        parts += [source, ""]
    parts += [_align(*_cells(table), markdown=True), "", *(f"- {n}" for n in _notes(table))]
    if failures:
        parts += ["", "## Failed runs", "", failures_text(failures, markdown=True)]
    return "\n".join(parts) + "\n"


def to_text(table: Table, failures: list[dict]) -> str:
    """The pivot (and failed runs) aligned for a terminal."""
    text = _align(*_cells(table), markdown=False)
    if failures:
        text += f"\n\nFailed runs ({len(failures)}):\n" + failures_text(failures, markdown=False)
    return text + "\n"


def to_table_csv(table: Table) -> str:
    """``table.csv``: one row per variant, machine-friendly names, ``<task>_<metric>`` and ``_n``."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([*TABLE_CSV_HEAD, *(x for c in table.columns for x in (c.key, f"{c.key}_n"))])
    for v in table.variants:
        line = [
            v.label, v.source, v.model, v.base, v.arch, v.n_heads, v.kv_heads, v.conversion, v.device,
            v.timing_mode, v.t_infer, v.average, v.n_tasks, v.n_runs if v.source != PUBLISHED else None,
            v.kv_bytes,
        ]  # fmt: skip
        for col in table.columns:
            cell = v.cells.get(col.key)
            line += [None, None] if cell is None else [cell.score, cell.n or None]
        writer.writerow(["" if x is None else x for x in line])
    return buf.getvalue()
