"""Report stage, the readable part: the paper's Table 1 as a pivot of summary rows, and its text forms.

``pivot(rows)`` turns the long-format summary rows (one per run) into one row per variant (base, model,
kv_heads, conversion), sample size (a smoke run's ``limit``: a row of its own, whatever else is present) and
settings (``SETTINGS``: runs that differ in one are tagged and kept apart): n, T_infer, the plain mean of the
primary scores present, then each task's score, repeats averaged and counted;
``published_rows()`` are the paper's own rows, kept apart. ``to_markdown``, ``to_table_csv`` and
``to_text`` render it. Nothing here reads or writes files (``summary.py`` does).
"""

from __future__ import annotations

import csv
import io
import statistics
from collections import Counter, defaultdict
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
INCOMPLETE_NOTE = (
    "Shards (shard=K/N) of one configuration become one row only when all N parts have a result.json "
    "and their predictions cover the task; these sets are neither in the table nor in summary.csv."
)
# Settings that change a number: runs that differ in one are never averaged together. A run-wide
# setting is compared with the folder's most common value; a per-task one with that task's largest
# (n_samples: the full split, among runs of the whole split; the lengths: the task's own) or, for the
# split, its most common value. A run that differs is tagged [setting=value] and goes into a row of its
# own, so that a fixed-timing run never moves a row of natural-timing runs. In the order tags are written.
# A smoke run (``limit`` cut its split) is not compared: its limit is part of its row's key (``smoke_limit``).
TASK_SETTINGS = ("n_samples", "split", "max_input_tokens", "max_new_tokens")
# device_name and threads: the hardware that timed a run (result.json's environment); an H100 run and a
# V100 run, or a 2-thread and a 16-thread CPU run, are never one cell
RUN_SETTINGS = ("timing_mode", "batch_size", "dtype", "device", "decode_path", "device_name", "threads")
SETTINGS = (*TASK_SETTINGS, *RUN_SETTINGS)
LARGEST = ("n_samples", "max_input_tokens", "max_new_tokens")
TABLE_CSV_HEAD = [
    "variant", "source", "model", "base", "arch", "n_heads", "kv_heads", "conversion", "uptrain_alpha",
    "smoke", "limit", "n_samples", "settings", "device",
    "timing_mode", "t_infer_s", "timing_partial", "average", "n_tasks", "n_runs", "kv_cache_bytes_per_token",
    "conversion_error", "uptrain_objective", "uptrain_lr", "gap_recovered",
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
    """A (variant, task) cell: mean primary score over its runs, how many runs, and their mean time
    (``partial``: only runs whose timing covers part of their examples had one); ``samples``: the
    examples each run scored (its n; one value, as a row's runs share their sample size per task)."""

    score: float
    n: int
    time_s: float | None = None
    partial: bool = False
    samples: int | None = None


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
    uptrain_alpha: float | None = (
        0.0  # fraction of the base's steps uptrained (None: a checkpoint that doesn't say)
    )
    source: str = "computed"
    cells: dict[str, Cell] = field(default_factory=dict)
    t_infer: float | None = None
    timing_mode: str | None = None
    timing_partial: bool = False
    average: float | None = None
    n_runs: int = 0
    kv_bytes: float | None = None
    device: str = ""
    settings: dict[str, object] = field(default_factory=dict)  # where its runs differ from the folder's
    # in the label's [...]: the smoke limit, a model name if needed, the settings
    tags: list[str] = field(default_factory=list)
    limit: int | None = None  # a smoke row's limit (its runs' first ``limit`` examples); None: whole splits
    conversion_error: float | None = None  # the conversion's measured damage (None: not measured)
    uptrain_objective: str | None = None  # an uptrained row's uptrain.objective (None: not uptrained)
    uptrain_lr: float | None = None  # an uptrained row's (peak) learning rate (None: not uptrained, unknown)
    show_lr: bool = False  # the label says the lr: the table has uptrained rows at more than one
    gap_recovered: float | None = None  # uptrained rows: share of the conversion's gap to MHA won back

    @property
    def n_tasks(self) -> int:
        return len(self.cells)

    @property
    def n_samples(self) -> int | None:
        """The examples per run that every cell of the row shares (None when the tasks' sizes differ, or
        the results do not say)."""
        sizes = {c.samples for c in self.cells.values()}
        return sizes.pop() if len(sizes) == 1 else None

    @property
    def untimed(self) -> list[str]:
        """Keys of the cells with a score but no time."""
        return [key for key, cell in self.cells.items() if cell.time_s is None]

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
    """The pivot: task columns in the paper's order, computed rows, then any published rows; ``mixed``:
    each setting in which some runs differ from the others, and the values found."""

    columns: list[Column]
    variants: list[Variant]
    mixed: dict[str, list] = field(default_factory=dict)


def _number(value) -> float | None:
    """A summary value as a number: None for none (summary.csv's empty cell)."""
    return None if value is None or value == "" else float(value)


def mean_of(values) -> float | None:
    """Mean of the values that are not None; None if there are none."""
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def _column_order(col: Column) -> tuple:
    order = list(PAPER_COLUMNS)
    pair = (col.task, col.metric)
    return (order.index(pair), "", "") if pair in order else (len(order), col.task, col.metric)


def _setting(row: dict, name: str):
    if name == "timing_mode":
        return _timing_mode(row)
    if name == "device":  # cpu or cuda: which GPU of a node (cuda:1) changes no number; device_name
        devices = {str(d).split(":")[0] for d in str(row.get(name) or "").split(", ") if d}
        return ", ".join(sorted(devices)) or None
    if name == "threads" and row.get(name) is not None:
        return str(row[name])  # a merged shard set's "2, 16" compares with a run's 2
    return row.get(name)


def _timing_mode(row: dict) -> str:
    return row.get("timing_mode") or "natural"


def _sorted(values) -> list:
    """Numbers in order, then anything else by its text."""
    return sorted(values, key=lambda x: (0, x, "") if isinstance(x, (int, float)) else (1, 0, str(x)))


def _most_common(values: list):
    counts = Counter(values)
    return max(_sorted(counts), key=lambda x: counts[x])  # ties: the first in order


def smoke_limit(row: dict) -> int | None:
    """The ``limit`` that cut a run's split (a smoke run: its first ``limit`` examples), or None for a run
    of the whole split (no limit, or a limit above the split's size, so that fewer examples were found).

    It is the run's own setting, never compared with other runs: a smoke run's row is the same whatever
    else the folder holds, and a limit=4 run and a 64-example run are never one row.
    """
    limit, n = row.get("limit"), row.get("n_samples")
    if limit is None or limit == "":
        return None
    limit = int(limit)
    return limit if n is None or n == "" or int(n) >= limit else None


def references(rows: list[dict]) -> dict[tuple[str | None, str], object]:
    """What each setting of a run is compared with: ``(None, name)`` run-wide, ``(task, name)`` per task
    (see ``SETTINGS``; a task's n_samples only among its runs of the whole split, as a smoke run's limit is
    its own row's key). A run lacking a setting (a result from before it was recorded) is not compared."""
    refs: dict[tuple[str | None, str], object] = {}
    by_task: dict[str | None, list[dict]] = defaultdict(list)
    for r in rows:
        by_task[r.get("task")].append(r)
    scopes = [(None, RUN_SETTINGS, rows), *((task, TASK_SETTINGS, runs) for task, runs in by_task.items())]
    for scope, names, runs in scopes:
        for name in names:
            if name == "n_samples":
                runs = [r for r in runs if smoke_limit(r) is None]
            values = [v for v in (_setting(r, name) for r in runs) if v is not None]
            if values:
                refs[(scope, name)] = max(values) if name in LARGEST else _most_common(values)
    return refs


def _differs(row: dict, refs: dict) -> tuple[tuple[str, object], ...]:
    """The (setting, value) pairs in which ``row`` differs from its references, in ``SETTINGS`` order."""
    out = []
    for name in SETTINGS:
        if name == "n_samples" and smoke_limit(row) is not None:
            continue  # the row's own key (``smoke_limit``), not compared
        value, ref = _setting(row, name), refs.get((None if name in RUN_SETTINGS else row.get("task"), name))
        if value is not None and ref is not None and value != ref:
            out.append((name, value))
    return tuple(out)


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
    v.timing_mode = _most_common([_timing_mode(r) for r in runs])  # one mode: it is a grouping setting
    # one conversion, one value (the same calibration examples whatever the task); the mean all the same
    v.conversion_error = mean_of(_number(r.get("conversion_error")) for r in runs)
    by_cell: dict[tuple, list[dict]] = defaultdict(list)
    for r in runs:
        by_cell[(r["task"], r["metric"])].append(r)
    for (task, metric), cell_runs in by_cell.items():
        timed = [r for r in cell_runs if r.get("time_per_sample_s") is not None]
        # A resumed run timed only the examples left after the interruption (the shortest, as batches
        # run longest first): a complete timing of the same cell is used instead where there is one.
        complete = [r for r in timed if not r.get("timing_partial")]
        sizes = {int(r["n_samples"]) for r in cell_runs if r.get("n_samples") not in (None, "")}
        v.cells[Column(task, metric).key] = Cell(
            score=statistics.fmean(float(r["score"]) for r in cell_runs),
            n=len(cell_runs),
            time_s=mean_of(float(r["time_per_sample_s"]) for r in complete or timed),
            partial=bool(timed) and not complete,
            samples=sizes.pop() if len(sizes) == 1 else None,  # one size: n_samples keeps runs apart
        )
    # T_infer covers the tasks of the Average or none: a mean over fewer tasks would not compare
    times = [c.time_s for c in v.cells.values()]
    v.t_infer = statistics.fmean(times) if None not in times else None
    v.timing_partial = v.t_infer is not None and any(c.partial for c in v.cells.values())
    v.average = statistics.fmean(c.score for c in v.cells.values())
    return v


def uptrain_alpha(row: dict) -> float | None:
    """A summary row's uptraining fraction (0 for rows from before uptraining was recorded)."""
    value = row.get("uptrain_alpha", 0)
    return None if value is None or value == "" else float(value)


def uptrain_objective(row: dict) -> str | None:
    """An uptrained summary row's objective (runs from before objectives were recorded trained on the task
    mixture); None for a row that was not uptrained."""
    if not uptrain_alpha(row):
        return None
    return row.get("uptrain_objective") or "task_mixture"


def uptrain_lr(row: dict) -> float | None:
    """An uptrained summary row's learning rate (its peak; None: not uptrained, or not recorded)."""
    value = row.get("uptrain_lr")
    return None if not uptrain_alpha(row) or value is None or value == "" else float(value)


def objective_tag(v: Variant) -> str:
    """How a row was uptrained where the label must say it: `` by distill`` for an objective other than
    the default task mixture, ``, lr=0.001`` where the table's uptrained rows differ in learning rate."""
    tag = f" by {v.uptrain_objective}" if v.uptrain_objective not in (None, "task_mixture") else ""
    return f"{tag}, lr={v.uptrain_lr:g}" if v.show_lr and v.uptrain_lr is not None else tag


def _label(v: Variant) -> str:
    label = f"{v.base} {v.kind}"
    how = [v.conversion] if v.conversion else []
    if v.uptrain_alpha:
        how.append(f"uptrained α={v.uptrain_alpha:g}{objective_tag(v)}")
    label = f"{label} ({', '.join(how)})" if how else label
    return f"{label} {tags_text(v.tags)}" if v.tags else label


def settings_text(settings: dict[str, object]) -> list[str]:
    """``{"n_samples": 8}`` -> ``["n_samples=8"]``: the tags of a row's settings."""
    return [f"{name}={value}" for name, value in settings.items()]


def smoke_text(limit: int | None) -> list[str]:
    """``4`` -> ``["smoke, n=4"]``: the tag of a smoke row (none for whole splits)."""
    return [] if limit is None else [f"smoke, n={limit}"]


def tags_text(tags: list[str]) -> str:
    """``[smoke, n=4] [batch_size=2, saved]``: a smoke tag in brackets of its own, then the others."""
    smoke = [t for t in tags if t.startswith("smoke, n=")]
    groups = (smoke, [t for t in tags if t not in smoke])
    return " ".join(f"[{', '.join(group)}]" for group in groups if group)


def row_tags(v: Variant) -> list[str]:
    """A row's tags from what it is (smoke limit, settings), without a model name added to tell it apart."""
    return [*smoke_text(v.limit), *settings_text(v.settings)]


def published_rows() -> list[Variant]:
    """The paper's Table 1 rows (see ``PAPER_TABLE1``), marked as published."""
    columns = [Column(task, metric) for task, metric in PAPER_COLUMNS]
    rows = []
    for label, n_heads, kv_heads, t_infer, average, *scores in PAPER_TABLE1:
        v = Variant(label, None, label.split()[0], "t5", n_heads, kv_heads, None, source=PUBLISHED)
        v.uptrain_alpha = 0.05 if kv_heads < n_heads else 0.0  # the paper uptrains its conversions for 5%
        v.cells = {c.key: Cell(score=s, n=0) for c, s in zip(columns, scores, strict=True)}
        v.t_infer, v.average, v.timing_mode, v.device = t_infer, average, None, "TPUv4"
        rows.append(v)
    return rows


def pivot(rows: list[dict], reference: str | None = None) -> Table:
    """One row per variant and settings from summary rows (one per run): runs that differ in one of
    ``SETTINGS`` from the others are never averaged with them; ``reference="paper"`` appends Table 1.

    Args:
        rows: summary rows with at least model, base, n_heads, kv_heads, conversion, task, metric,
            score, time_per_sample_s (and optionally the ``SETTINGS``, timing_partial,
            kv_cache_bytes_per_token; a setting that is missing is not compared).
        reference: None, or ``"paper"`` to add the paper's published rows (never averaged with ours).
    """
    if reference not in (None, *REFERENCES):
        raise ValueError(f"unknown reference {reference!r}; choose from {list(REFERENCES)}")
    rows = [r for r in rows if r.get("score") is not None and r.get("task")]
    refs = references(rows)
    groups: dict[tuple, list[dict]] = defaultdict(list)
    mixed: dict[str, set] = defaultdict(set)
    for r in rows:
        differs = _differs(r, refs)
        for name, value in differs:
            mixed[name] |= {value, refs[(None if name in RUN_SETTINGS else r["task"], name)]}
        key = (
            r.get("base"),
            r.get("model"),
            r.get("kv_heads"),
            r.get("conversion"),
            uptrain_objective(r),
            uptrain_lr(r),
            uptrain_alpha(r),
            smoke_limit(r),  # the run's own: which row it joins never depends on the other runs
            differs,
        )
        groups[key].append(r)
    limits = {smoke_limit(r) for r in rows}
    if len(limits) > 1:
        mixed["limit"] = {"none" if x is None else x for x in limits}
    variants = []
    for key, runs in groups.items():
        v = _variant(runs)
        v.uptrain_objective, v.uptrain_lr, v.uptrain_alpha, v.limit = key[-5], key[-4], key[-3], key[-2]
        v.settings = dict(key[-1])
        v.tags = row_tags(v)
        variants.append(v)
    # runs uptrained at different learning rates are rows of their own, told apart by their lr
    show_lr = len({v.uptrain_lr for v in variants if v.uptrain_alpha}) > 1
    for v in variants:
        v.show_lr = show_lr and bool(v.uptrain_alpha)
        v.label = _label(v)
    # Same geometry under two names (a saved GQA-8 checkpoint next to model=gqa8): the row whose name is
    # the preset's for its geometry (mha, gqaN, mqa) keeps the plain label, the others are told by name.
    counts = Counter(v.label for v in variants)
    for v in variants:
        if counts[v.label] > 1 and v.model != v.kind.lower().replace("-", ""):
            v.tags.insert(0, str(v.model))
            v.label = _label(v)
    variants.sort(
        key=lambda v: (
            str(v.base),
            -(v.kv_heads or 0),
            v.conversion or "",
            v.uptrain_alpha or 0,
            v.uptrain_objective or "",
            v.uptrain_lr or 0,
            v.limit is not None,  # whole splits first, then smoke rows by limit
            v.limit or 0,
            v.tags,
            str(v.model),
        )
    )
    _gaps_recovered(variants)
    if reference == "paper":
        variants += published_rows()
    keys = {(r["task"], r["metric"]) for r in rows}
    if reference == "paper":
        keys |= set(PAPER_COLUMNS)
    columns = sorted((Column(*k) for k in keys), key=_column_order)
    names = ("limit", *SETTINGS)
    return Table(columns, variants, {name: _sorted(mixed[name]) for name in names if name in mixed})


def _gaps_recovered(variants: list[Variant]) -> None:
    """Set each uptrained row's ``gap_recovered``: (its Average - its conversion's Average before
    uptraining) / (the unconverted MHA's Average - the conversion's), rows of the same base, limit and
    settings over the same tasks; None where any of them is missing or the conversion lost nothing."""

    def same(a: Variant, b: Variant) -> bool:
        return (a.base, a.limit, a.settings, set(a.cells)) == (b.base, b.limit, b.settings, set(b.cells))

    for v in variants:
        if not v.uptrain_alpha or v.average is None:
            continue
        geometry = (v.kv_heads, v.conversion)
        start = [
            u
            for u in variants
            if same(u, v) and u.uptrain_alpha == 0 and (u.kv_heads, u.conversion) == geometry
        ]
        mha = [
            u
            for u in variants
            if same(u, v) and u.conversion is None and u.kv_heads == u.n_heads and not u.uptrain_alpha
        ]
        if len(start) == 1 and len(mha) == 1 and None not in (start[0].average, mha[0].average):
            gap = mha[0].average - start[0].average
            v.gap_recovered = (v.average - start[0].average) / gap if gap > 0 else None


def _mixed(table: Table) -> str:
    """``n_samples (8, 64), timing_mode (fixed, natural)``: the settings in which the runs differ."""
    return ", ".join(f"{name} ({', '.join(map(str, values))})" for name, values in table.mixed.items())


def mixed_settings_line(table: Table) -> str | None:
    """One line naming the settings in which the runs differ (None if they do not)."""
    if not table.mixed:
        return None
    tags = [
        *(["[smoke, n=N]"] if "limit" in table.mixed else []),
        *(["[setting=value]"] if set(table.mixed) - {"limit"} else []),
    ]
    return (
        f"the runs differ in {_mixed(table)}; runs that differ are never averaged together: "
        f"they are the rows tagged {' or '.join(tags)}"
    )


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


def _n_text(v: Variant) -> str:
    """The n column: the examples per run that the row's cells share, ``by task`` when the tasks' sizes
    differ (each cell then says its own), — for published rows and results that do not record it."""
    sizes = {c.samples for c in v.cells.values()}
    if v.source == PUBLISHED or sizes <= {None}:
        return "—"
    return "by task" if len(sizes) > 1 else str(sizes.pop())


def _cell_text(cell: Cell, spec: str, own_n: bool) -> str:
    """``43.21``, ``43.21 (n=64)`` when the row's cells differ in n, ``43.21 (2 runs)`` for repeats."""
    notes = [f"n={cell.samples if cell.samples is not None else '?'}"] if own_n else []
    notes += [f"{cell.n} runs"] if cell.n > 1 else []
    return _num(cell.score, spec) + (f" ({', '.join(notes)})" if notes else "")


def _cells(table: Table) -> tuple[list[str], list[list[str]]]:
    """Header and body of the human-readable table (table.md and the terminal)."""
    gaps = any(v.gap_recovered is not None for v in table.variants)
    header = ["Model", "n", "T_infer (s)", "Average", *(["Gap recovered"] if gaps else [])]
    header += [c.label for c in table.columns]
    body = []
    total = len(table.columns)
    for v in table.variants:
        published = v.source == PUBLISHED
        score_spec, time_spec = (".1f", ".2f") if published else (".2f", "#.3g")
        t_infer = _num(v.t_infer, time_spec) + (" (partial)" if v.timing_partial else "") or "—"
        average = f"{_num(v.average, score_spec)} ({v.n_tasks}/{total})" if v.average is not None else "—"
        n_text = _n_text(v)
        line = [f"{v.label} (published, TPUv4)" if published else v.label, n_text, t_infer, average]
        if gaps:
            line.append("—" if v.gap_recovered is None else f"{100 * v.gap_recovered:.0f}%")
        for col in table.columns:
            cell = v.cells.get(col.key)
            line.append("—" if cell is None else _cell_text(cell, score_spec, n_text == "by task"))
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


def incomplete_text(sets: list[dict], markdown: bool) -> str:
    """The sets of shards that are no row (a part missing, or predictions that do not add up): model,
    base, task, kv_heads, the parts found of N, what is wrong and the shards' run directories."""
    header = ["model", "base", "task", "kv_heads", "shards", "problem", "run_dir"]
    body = []
    for s in sets:
        cells = [s.get(k) for k in header]
        text = ["" if c is None else str(c).replace("\n", " ") for c in cells]
        body.append([c.replace("|", "\\|") for c in text] if markdown else text)
    return _align(header, body, markdown, numbers=False)


def _notes(table: Table) -> list[str]:
    computed = [v for v in table.variants if v.source != PUBLISHED]
    devices = sorted({v.device for v in computed if v.device})
    notes = [
        "Average: plain mean of the primary scores present in the row (R1, BLEU, F1 on a 0-100 scale, "
        "as the paper averages them); (k/N) = over k of the N task columns. — = no run.",
        "n: examples per run in each cell (the split's, or a smoke run's limit); by task = the cells differ, "
        "each says its own (n=N). Repeats of a variant and task are averaged; (K runs) = mean of K runs. "
        "Every run is in summary.csv.",
        "T_infer: seconds per sample on "
        + (", ".join(devices) or "the run's device")
        + "; the mean over the row's tasks (those of its Average) of each task's mean over its runs.",
    ]
    if any(v.gap_recovered is not None for v in computed):
        notes.append(
            "Gap recovered: how much of its conversion's loss an uptrained row won back, (its Average - "
            "the conversion's before uptraining) / (MHA's - the conversion's), rows of the same base, n, "
            "settings and tasks. by X: the uptraining objective (uptrain.objective; none named: "
            "task_mixture)."
        )
    if any(v.limit is not None for v in computed):
        notes.append(
            "[smoke, n=N]: runs of the first N examples of each split (limit=N), never in one row with runs "
            "of another limit or of the whole split; their scores are not the full split's."
        )
    if set(table.mixed) - {"limit"}:
        notes.append(
            "Runs are averaged only with runs of the same " + ", ".join(SETTINGS) + ". [setting=value]: "
            "the row's runs differ in that setting from the others (from the folder's most common value; "
            f"for n_samples and the lengths, from the task's largest). Here the runs differ in "
            f"{_mixed(table)}."
        )
    partial = [v.label for v in computed if v.timing_partial]
    if partial:
        notes.append(
            "(partial): T_infer includes runs that were resumed, whose timing covers only the examples "
            "predicted after the resume (timing_partial in summary.csv); a complete timing of the same "
            "task is used instead where there is one: " + ", ".join(partial) + "."
        )
    untimed = [v for v in computed if v.t_infer is None and v.untimed]
    if untimed:
        notes.append(
            "T_infer — for "
            + "; ".join(f"{v.label} (no time on {', '.join(v.untimed)})" for v in untimed)
            + ": T_infer is given only over all the tasks of the Average."
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


def to_markdown(table: Table, failures: list[dict], source: str = "", incomplete: list[dict] = ()) -> str:
    """``table.md``: the aligned pivot, notes, and "Failed runs" and "Incomplete shard sets" sections when
    any run failed or a set of shards (``summary.ShardSet``) is no row."""
    parts = ["# Results: quality vs. cost (the GQA paper's Table 1 layout)", ""]
    if source:
        parts += [source, ""]
    parts += [_align(*_cells(table), markdown=True), "", *(f"- {n}" for n in _notes(table))]
    if failures:
        parts += ["", "## Failed runs", "", failures_text(failures, markdown=True)]
    if incomplete:
        parts += ["", "## Incomplete shard sets", "", INCOMPLETE_NOTE, "", incomplete_text(incomplete, True)]
    return "\n".join(parts) + "\n"


def to_text(table: Table, failures: list[dict], incomplete: list[dict] = ()) -> str:
    """The pivot (and failed runs, and incomplete sets of shards) aligned for a terminal."""
    text = _align(*_cells(table), markdown=False)
    if failures:
        text += f"\n\nFailed runs ({len(failures)}):\n" + failures_text(failures, markdown=False)
    if incomplete:
        text += f"\n\nIncomplete shard sets ({len(incomplete)}), not in the table:\n"
        text += incomplete_text(incomplete, markdown=False)
    return text + "\n"


def to_table_csv(table: Table) -> str:
    """``table.csv``: one row per variant, machine-friendly names; ``smoke``, ``limit`` and ``n_samples``
    (the examples per run its cells share; empty when they differ), then per task ``<task>_<metric>``,
    ``_n_samples`` (the cell's n) and ``_runs`` (how many runs it averages)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    per_cell = (x for c in table.columns for x in (c.key, f"{c.key}_n_samples", f"{c.key}_runs"))
    writer.writerow([*TABLE_CSV_HEAD, *per_cell])
    for v in table.variants:
        computed = v.source != PUBLISHED
        line = [
            v.label, v.source, v.model, v.base, v.arch, v.n_heads, v.kv_heads, v.conversion, v.uptrain_alpha,
            v.limit is not None if computed else None, v.limit, v.n_samples if computed else None,
            " ".join(settings_text(v.settings)), v.device, v.timing_mode, v.t_infer,
            v.timing_partial if computed else None, v.average, v.n_tasks, v.n_runs if computed else None,
            v.kv_bytes, v.conversion_error, v.uptrain_objective, v.uptrain_lr, v.gap_recovered,
        ]  # fmt: skip
        for col in table.columns:
            cell = v.cells.get(col.key)
            line += [None, None, None] if cell is None else [cell.score, cell.samples, cell.n or None]
        writer.writerow(["" if x is None else x for x in line])
    return buf.getvalue()
