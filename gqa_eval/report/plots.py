"""Report stage, plots: the paper's Fig. 3 (quality vs time per sample) and Fig. 6 (time and KV-cache
bytes vs number of K/V heads), drawn on bare matplotlib Figures (the Agg renderer: no display needed).

Both read the table's rows as they are: a point is one row of ``table.md``, with its numbers, labelled as
the table labels it (``quality_points``, ``kv_series``); nothing is pooled again here.
"""

from __future__ import annotations

import io
from collections import defaultdict

from gqa_eval.report.table import (
    PUBLISHED,
    Column,
    Table,
    Variant,
    objective_tag,
    row_tags,
    smoke_text,
    tags_text,
)


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")  # a bare Figure renders with Agg: no display, no pyplot state
    return buf.getvalue()


def _style(ax) -> None:
    ax.grid(True, alpha=0.3, linewidth=0.6)
    ax.spines[["top", "right"]].set_visible(False)


def _no_data(ax, what: str) -> None:
    ax.text(0.5, 0.5, f"no runs with {what}", ha="center", va="center", transform=ax.transAxes, color="0.4")


def _point(v: Variant, column: Column | None) -> tuple[float | None, float | None]:
    """(time per sample, score) of a variant: T_infer and Average, or one task's cell."""
    if column is None:
        return v.t_infer, v.average
    cell = v.cells.get(column.key)
    return (cell.time_s, cell.score) if cell else (None, None)


def _computed(table: Table) -> list[Variant]:
    return [v for v in table.variants if v.source != PUBLISHED]


def _n_tasks(table: Table) -> int:
    """How many task columns the computed rows fill (the published rows may add more)."""
    return len({c.key for v in _computed(table) for c in table.columns if c.key in v.cells})


def quality_points(table: Table, column: Column | None = None) -> dict[str, list[tuple[float, float, str]]]:
    """Fig. 3's points by base: (time, score, the row's label) for every row with both, fewest K/V
    heads first; a label says over how many tasks when the Average covers fewer than all."""
    total = _n_tasks(table)
    points: dict[str, list] = {}
    for v in sorted(_computed(table), key=lambda v: (str(v.base), v.kv_heads or 0)):
        x, y = _point(v, column)
        if x is not None and y is not None:
            note = f" ({v.n_tasks}/{total} tasks)" if column is None and v.n_tasks < total else ""
            points.setdefault(str(v.base), []).append((x, y, v.label + note))
    return points


def plot_quality_vs_time(table: Table, column: Column | None = None) -> bytes:
    """The paper's Fig. 3: Average (or one task's score) against time per sample, a point per table row."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 5), dpi=150, layout="constrained")
    ax = fig.add_subplot()
    _style(ax)
    variants, total = _computed(table), _n_tasks(table)
    by_base = quality_points(table, column)
    for i, (base, points) in enumerate(by_base.items()):
        color = colormaps["tab10"](i % 10)
        xs, ys, _ = zip(*points, strict=True)
        ax.scatter(xs, ys, s=46, color=color, edgecolor="white", linewidth=0.8, zorder=3, label=base)
        for x, y, text in points:
            ax.annotate(text, (x, y), xytext=(6, 5), textcoords="offset points", fontsize=7, zorder=4)
    devices = ", ".join(sorted({v.device for v in variants if v.device})) or "device"
    ax.set_xlabel(f"Time per sample (s, {devices})")
    what = "Average of the primary scores" if column is None else f"{column.label} ({column.task})"
    ax.set_ylabel(f"{what} (0-100)")
    scope = f"Average over {total} tasks" if column is None else f"{column.label}; time on {column.task}"
    ax.set_title(f"Quality vs. inference time ({scope})\ncf. Ainslie et al. 2023 (arXiv 2305.13245), Fig. 3")
    if by_base:
        ax.margins(x=0.18, y=0.12)
        ax.set_ylim(bottom=max(ax.get_ylim()[0], 0.0))  # scores are 0-100
        ax.legend(title="base checkpoint", fontsize=8, title_fontsize=8, loc="best")
    else:
        _no_data(ax, "a score and a time per sample")
    return _png(fig)


def _bytes_label(value: float, _pos=None) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:g} {unit}"
        value /= 1024
    return f"{value:g} TiB"


def _series_name(base, conversion, tags: list[str]) -> str:
    """A Fig. 6 line: a table label without its MHA/GQA-G/MQA word (the x axis says that)."""
    name = str(base) + (f" ({conversion})" if conversion else "")
    return f"{name} {tags_text(tags)}" if tags else name


def _how(v: Variant) -> str | None:
    """A row's conversion and uptraining, as its label says them (``mean, uptrained α=0.05``)."""
    if v.conversion and v.uptrain_alpha:
        return f"{v.conversion}, uptrained α={v.uptrain_alpha:g}"
    return v.conversion


def kv_series(table: Table, column: Column | None = None) -> dict[str, list[tuple[int, Variant]]]:
    """Fig. 6's lines: per base, conversion and tags, (kv_heads, row) with one row per kv_heads.

    A row with no conversion (the base as it is: MHA) joins every line of its base with the same
    settings tags, or stands alone.
    """
    variants = [v for v in _computed(table) if v.kv_heads]
    series: dict[str, list[tuple[int, Variant]]] = defaultdict(list)
    for v in variants:
        if v.conversion:
            series[_series_name(v.base, _how(v), v.tags)].append((v.kv_heads, v))
    for v in variants:
        if v.conversion:
            continue
        joins = [
            _series_name(w.base, _how(w), w.tags)
            for w in variants
            if w.conversion and w.base == v.base and w.tags == v.tags == row_tags(v)
        ]  # a row told apart by its model name (a saved checkpoint) neither joins nor is joined
        for name in dict.fromkeys(joins) or [_series_name(v.base, None, v.tags)]:
            series[name].append((v.kv_heads, v))
    return {name: sorted(points, key=lambda p: p[0]) for name, points in sorted(series.items())}


def plot_time_vs_kv_heads(table: Table, column: Column | None = None) -> bytes:
    """The paper's Fig. 6: time per sample and KV-cache bytes against kv_heads (log2), a line per base
    (and conversion, and settings tag), each point one row of the table (``kv_series``)."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    fig = Figure(figsize=(11, 4.6), dpi=150, layout="constrained")
    ax_t, ax_b = fig.subplots(1, 2, sharex=True)
    series = kv_series(table, column)
    handles = {}  # one legend entry per line, from whichever panel has it
    for i, (label, points) in enumerate(series.items()):
        color = colormaps["tab10"](i % 10)
        for ax, values, marker in (
            (ax_t, [(k, _point(v, column)[0]) for k, v in points], "o"),
            (ax_b, [(k, v.kv_bytes) for k, v in points], "s"),
        ):
            pts = [(k, y) for k, y in values if y is not None]
            if not pts:
                continue
            (line,) = ax.plot(*zip(*pts, strict=True), marker=marker, color=color, markersize=5, zorder=3)
            handles.setdefault(label, line)
            for k, y in pts:
                text = _bytes_label(y) if ax is ax_b else f"{y:.3g}"
                ax.annotate(text, (k, y), xytext=(0, 7), textcoords="offset points", ha="center", fontsize=7)
    variants = [v for points in series.values() for _, v in points]
    ticks = sorted({v.kv_heads for v in variants})
    for ax in (ax_t, ax_b):
        _style(ax)
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_locator(FixedLocator(ticks or [1]))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
        ax.set_xlabel("KV heads G (log2; 1 = MQA, all heads = MHA)")
        ax.margins(x=0.1, y=0.15)
    devices = ", ".join(sorted({v.device for v in variants if v.device})) or "device"
    where = "T_infer: mean over each row's tasks" if column is None else column.task
    ax_t.set_ylabel(f"Time per sample (s, {devices})")
    ax_t.set_title(f"Time per sample ({where})")
    ax_t.set_ylim(bottom=0)
    ax_b.set_yscale("log", base=2)
    ax_b.yaxis.set_major_formatter(FuncFormatter(_bytes_label))
    ax_b.set_ylabel("KV cache per token (log2)")
    ax_b.set_title("KV-cache size per token (decoder self-attention)")
    if handles:
        ax_t.legend(list(handles.values()), list(handles), title="table rows", fontsize=7, title_fontsize=8)
    if not ax_t.lines:
        _no_data(ax_t, "kv_heads and a time")
    if not ax_b.lines:
        _no_data(ax_b, "kv_heads and KV-cache bytes")
    fig.suptitle("Inference cost vs. number of key/value heads  (cf. Ainslie et al. 2023, Fig. 6)")
    return _png(fig)


# The conversion methods in the order the bars are drawn (others after these, by name).
METHOD_ORDER = ("mean", "first", "random", "aligned", "clustered", "clustered_aligned")


def _plain(table: Table):
    """Which rows Figs. 4 and 5 draw, so that they compare like with like: rows without settings tags, of
    the whole splits, or, when the table holds only smoke rows, of the largest smoke limit
    (``[smoke, n=N]`` and nothing else)."""
    limits = {v.limit for v in _computed(table)}
    drawn = None if None in limits or not limits else max(limits)
    return lambda v: v.tags == smoke_text(drawn)


def _smoke_note(table: Table) -> str:
    """``  [smoke, n=4]`` in a Fig. 4/5 title when the rows drawn are smoke rows."""
    limits = {v.limit for v in _computed(table)}
    return "" if None in limits or not limits else f"  [smoke, n={max(limits)}]"


def _mha_lines(ax, table: Table, column: Column | None, keep=lambda v: True) -> None:
    """The MHA rows without settings tags (and that ``keep`` accepts) as labelled dashed lines."""
    plain = _plain(table)
    for v in _computed(table):
        score = _point(v, column)[1]
        if v.kind == "MHA" and score is not None and plain(v) and keep(v):
            ax.axhline(score, color="0.3", linestyle="--", linewidth=1, zorder=2)
            ax.annotate(
                f"{v.label}: {score:.3g}", (1, score), xycoords=("axes fraction", "data"), xytext=(-4, 3),
                textcoords="offset points", ha="right", fontsize=7, color="0.3",
            )  # fmt: skip


def method_bars(table: Table, column: Column | None = None) -> dict[str, dict[str, float]]:
    """Fig. 4's bars: {variant kind (GQA-4, MQA, ...): {conversion: score}}, one bar per converted table
    row with a score (the Average, or one task's); rows that differ in settings (tags) are left out, so
    every bar of the chart compares like with like (smoke rows too, unless all rows are: ``_plain``)."""
    bars: dict[str, dict[str, float]] = {}
    plain = _plain(table)
    for v in _computed(table):
        score = _point(v, column)[1]
        if v.conversion is None or score is None or not plain(v) or v.uptrain_alpha != 0:
            continue  # Fig. 4 is before uptraining
        bars.setdefault(v.kind, {})[v.conversion] = score
    return bars


def plot_conversion_methods(table: Table, column: Column | None = None) -> bytes:
    """The paper's Fig. 4: quality of each conversion method before uptraining, a group of bars per
    method and a bar per variant (GQA-G, MQA); the unconverted MHA rows as dashed lines."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4.6), dpi=150, layout="constrained")
    ax = fig.add_subplot()
    _style(ax)
    bars = method_bars(table, column)
    methods = sorted(
        {m for scores in bars.values() for m in scores},
        key=lambda m: (METHOD_ORDER.index(m) if m in METHOD_ORDER else len(METHOD_ORDER), m),
    )
    kinds = sorted(
        bars, key=lambda k: -1 if k == "MQA" else int(k.split("-")[1]) if k.startswith("GQA-") else 0
    )
    width = 0.8 / max(1, len(kinds))
    for i, kind in enumerate(kinds):
        xs = [j + (i - (len(kinds) - 1) / 2) * width for j, m in enumerate(methods) if m in bars[kind]]
        ys = [bars[kind][m] for m in methods if m in bars[kind]]
        drawn = ax.bar(xs, ys, width=width * 0.92, color=colormaps["tab10"](i % 10), label=kind, zorder=3)
        ax.bar_label(drawn, fmt="%.3g", fontsize=7, padding=2)
    _mha_lines(ax, table, column)
    ax.set_xticks(range(len(methods)), methods)
    ax.set_xlabel("conversion method (no uptraining)")
    where = "Average over each row's tasks" if column is None else column.label
    ax.set_ylabel(f"Quality ({where})")
    ax.set_ylim(bottom=0)
    if bars:
        ax.legend(title="variant", fontsize=7, title_fontsize=8)
    else:
        _no_data(ax, "a conversion method and a score")
    fig.suptitle(
        "Conversion methods before uptraining  (cf. Ainslie et al. 2023, Fig. 4)" + _smoke_note(table)
    )
    return _png(fig)


def uptraining_series(table: Table, column: Column | None = None) -> dict[str, list[tuple[float, float]]]:
    """Fig. 5's lines: per base, variant kind and conversion, (alpha, score) for each uptraining
    fraction in the table (alpha 0: the conversion as it is); rows with settings tags are left out, and
    so are conversions never uptrained when others were."""
    series: dict[str, list[tuple[float, float]]] = defaultdict(list)
    starts: dict[str, list[tuple[float, float]]] = defaultdict(list)  # alpha 0, shared by every objective
    plain = _plain(table)
    for v in _computed(table):
        score = _point(v, column)[1]
        if v.conversion is None or score is None or not plain(v) or v.uptrain_alpha is None:
            continue
        name = f"{v.base} {v.kind} ({v.conversion})"
        if not v.uptrain_alpha:
            starts[name].append((0.0, score))
            continue
        series[name + objective_tag(v)].append((v.uptrain_alpha, score))
    for name, points in starts.items():  # each line starts at its conversion before uptraining
        lines = [s for s in series if s == name or s.startswith((name + " by ", name + ", lr="))] or [name]
        for line in lines:
            series[line] += points
    uptrained = any(alpha for points in series.values() for alpha, _ in points)
    # once some line has uptrained points, variants that were never uptrained are dots at 0, not lines
    return {
        name: sorted(points)
        for name, points in sorted(series.items())
        if not uptrained or any(alpha for alpha, _ in points)
    }


def plot_uptraining(table: Table, column: Column | None = None) -> bytes:
    """The paper's Fig. 5: quality against the uptraining fraction alpha, a line per variant (and
    conversion); the unconverted MHA rows as dashed lines."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4.6), dpi=150, layout="constrained")
    ax = fig.add_subplot()
    _style(ax)
    series = uptraining_series(table, column)
    for i, (name, points) in enumerate(series.items()):
        ax.plot(*zip(*points, strict=True), marker="o", markersize=5, color=colormaps["tab10"](i % 10),
                label=name, zorder=3)  # fmt: skip
        for x, y in points:
            ax.annotate(
                f"{y:.3g}", (x, y), xytext=(0, 6), textcoords="offset points", ha="center", fontsize=7
            )
    _mha_lines(ax, table, column, lambda v: v.conversion is None and not v.uptrain_alpha)
    ax.set_xlabel("uptraining fraction α (of the base's training steps)")
    where = "Average over each row's tasks" if column is None else column.label
    ax.set_ylabel(f"Quality ({where})")
    ax.set_ylim(bottom=0)
    ax.margins(x=0.08)
    if series:
        ax.legend(title="variant", fontsize=7, title_fontsize=8)
    else:
        _no_data(ax, "a converted variant and a score")
    fig.suptitle("Quality vs. uptraining proportion  (cf. Ainslie et al. 2023, Fig. 5)" + _smoke_note(table))
    return _png(fig)


def conversion_error_points(table: Table, column: Column | None = None) -> list[tuple[float, float, str]]:
    """The points of ``conversion_error.png``: (measured conversion error, score, the row's label) of every
    converted row before uptraining that has both, rows with settings tags left out (``_plain``)."""
    plain = _plain(table)
    points = []
    for v in _computed(table):
        score = _point(v, column)[1]
        if v.conversion_error is None or score is None or not plain(v) or v.uptrain_alpha:
            continue
        points.append((v.conversion_error, score, v.label))
    return sorted(points)


def plot_conversion_error(table: Table, column: Column | None = None) -> bytes:
    """Quality against the conversion-error predictor (gqa_eval/variant/damage.py), a point per converted
    row before uptraining: whether the cheap measure ranks the conversions as their scores do. The
    unconverted MHA rows (error 0) as dashed lines."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 4.8), dpi=150, layout="constrained")
    ax = fig.add_subplot()
    _style(ax)
    points = conversion_error_points(table, column)
    if points:
        xs, ys, labels = zip(*points, strict=True)
        ax.scatter(xs, ys, s=46, color="tab:blue", edgecolor="white", linewidth=0.8, zorder=3)
        for x, y, text in points:
            ax.annotate(text, (x, y), xytext=(6, 5), textcoords="offset points", fontsize=7, zorder=4)
        ax.margins(x=0.2, y=0.12)
    else:
        _no_data(ax, "a measured conversion error and a score")
    _mha_lines(ax, table, column, lambda v: v.conversion is None and not v.uptrain_alpha)
    ax.set_xlabel("conversion error (mean relative output error of the converted attention layers)")
    where = "Average over each row's tasks" if column is None else column.label
    ax.set_ylabel(f"Quality ({where})")
    ax.set_ylim(bottom=0)
    fig.suptitle("Quality vs. the conversion's measured damage, before uptraining" + _smoke_note(table))
    return _png(fig)
