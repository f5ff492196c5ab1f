"""Summary stage, plots: the paper's Fig. 3 (quality vs time per sample) and Fig. 6 (time and KV-cache
bytes vs number of K/V heads), drawn on bare matplotlib Figures (the Agg renderer: no display needed)."""

from __future__ import annotations

import io
from collections import defaultdict

from gqa_eval.report import PUBLISHED, Column, Table, Variant, mean_of


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


def plot_quality_vs_time(table: Table, column: Column | None = None) -> bytes:
    """The paper's Fig. 3: Average (or one task's score) against time per sample, a point per variant."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 5), dpi=150, layout="constrained")
    ax = fig.add_subplot()
    _style(ax)
    variants = [v for v in table.variants if v.source != PUBLISHED]
    total, plotted = len({c.key for v in variants for c in table.columns if c.key in v.cells}), 0
    bases = sorted({str(v.base) for v in variants})
    for i, base in enumerate(bases):
        points = []
        for v in sorted((v for v in variants if str(v.base) == base), key=lambda v: v.kv_heads or 0):
            x, y = _point(v, column)
            if x is None or y is None:
                continue
            note = f" ({v.n_tasks}/{total} tasks)" if column is None and v.n_tasks < total else ""
            conv = f" {v.conversion}" if v.conversion not in (None, "mean") else ""
            points.append((x, y, f"{v.kind}{conv}{note}"))
        if not points:
            continue
        color = colormaps["tab10"](i % 10)
        xs, ys, _ = zip(*points, strict=True)
        ax.scatter(xs, ys, s=46, color=color, edgecolor="white", linewidth=0.8, zorder=3, label=base)
        for x, y, text in points:
            ax.annotate(text, (x, y), xytext=(6, 5), textcoords="offset points", fontsize=8, zorder=4)
        plotted += len(points)
    devices = ", ".join(sorted({v.device for v in variants if v.device})) or "device"
    ax.set_xlabel(f"Time per sample (s, {devices})")
    what = "Average of the primary scores" if column is None else f"{column.label} ({column.task})"
    ax.set_ylabel(f"{what} (0-100)")
    scope = f"Average over {total} tasks" if column is None else f"{column.label}; time on {column.task}"
    ax.set_title(f"Quality vs. inference time ({scope})\ncf. Ainslie et al. 2023 (arXiv 2305.13245), Fig. 3")
    if plotted:
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


def plot_time_vs_kv_heads(table: Table, column: Column | None = None) -> bytes:
    """The paper's Fig. 6: time per sample and KV-cache bytes against kv_heads (log2), a line per base.

    MHA (no conversion) joins every conversion method's line of its base.
    """
    from matplotlib import colormaps
    from matplotlib.figure import Figure
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    fig = Figure(figsize=(11, 4.6), dpi=150, layout="constrained")
    ax_t, ax_b = fig.subplots(1, 2, sharex=True)
    variants = [v for v in table.variants if v.source != PUBLISHED and v.kv_heads]
    convs = sorted({v.conversion for v in variants if v.conversion})
    series: dict[tuple, dict[int, list]] = defaultdict(lambda: defaultdict(list))
    for v in variants:
        own = [c for c in convs if any(w.base == v.base and w.conversion == c for w in variants)]
        for conv in [v.conversion] if v.conversion else own or [None]:
            series[(str(v.base), conv)][v.kv_heads].append(v)

    handles = {}  # one legend entry per line, from whichever panel has it
    for i, ((base, conv), by_kv) in enumerate(
        sorted(series.items(), key=lambda kv: (kv[0][0], str(kv[0][1])))
    ):
        color, label = colormaps["tab10"](i % 10), base + (f" ({conv})" if len(convs) > 1 and conv else "")
        kvs = sorted(by_kv)
        for ax, values, marker in (
            (ax_t, [mean_of(_point(v, column)[0] for v in by_kv[k]) for k in kvs], "o"),
            (ax_b, [mean_of(v.kv_bytes for v in by_kv[k]) for k in kvs], "s"),
        ):
            pts = [(k, y) for k, y in zip(kvs, values, strict=True) if y is not None]
            if not pts:
                continue
            (line,) = ax.plot(*zip(*pts, strict=True), marker=marker, color=color, markersize=5, zorder=3)
            handles.setdefault(label, line)
            for k, y in pts:
                text = _bytes_label(y) if ax is ax_b else f"{y:.3g}"
                ax.annotate(text, (k, y), xytext=(0, 7), textcoords="offset points", ha="center", fontsize=7)
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
    where = "mean over each variant's tasks" if column is None else column.task
    ax_t.set_ylabel(f"Time per sample (s, {devices})")
    ax_t.set_title(f"Time per sample ({where})")
    ax_t.set_ylim(bottom=0)
    ax_b.set_yscale("log", base=2)
    ax_b.yaxis.set_major_formatter(FuncFormatter(_bytes_label))
    ax_b.set_ylabel("KV cache per token (log2)")
    ax_b.set_title("KV-cache size per token (decoder self-attention)")
    if handles:
        ax_t.legend(
            list(handles.values()), list(handles), title="base checkpoint", fontsize=8, title_fontsize=8
        )
    if not ax_t.lines:
        _no_data(ax_t, "kv_heads and a time")
    if not ax_b.lines:
        _no_data(ax_b, "kv_heads and KV-cache bytes")
    fig.suptitle("Inference cost vs. number of key/value heads  (cf. Ainslie et al. 2023, Fig. 6)")
    return _png(fig)
