"""Timing stage: one timer API for every path that measures inference cost.

Clocks: on CPU ``time.perf_counter``; on CUDA, CUDA events recorded in the stream and read after the
batch, so the figures cover the kernels and not only their launch. Warm-up work is run outside the
timer. Each timed batch keeps its wall time, its time to first token (prefill: the encoder plus the
first decoder step, or the prompt forward) and the time of every later decode step, read by a logits
processor (:class:`StepClock`) that generate() calls once per step, right after that step's forward
pass. Summaries report totals (time per sample, the paper's T_infer analogue; tokens per second) and
medians with their spread over batches and steps.

``StepClock`` also implements the fixed-work timing mode: it suppresses EOS so every example decodes
exactly ``max_new_tokens`` tokens (identical work for every variant), and records, per row, the step at
which greedy decoding would have stopped, so the prediction scored is the natural one.
"""

from __future__ import annotations

import ctypes
import gc
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import LogitsProcessor

MODES = ("natural", "fixed")


@dataclass
class BatchTiming:
    """One timed batch: wall time, prefill time and decode step times, in seconds."""

    seconds: float
    samples: int
    new_tokens: int = 0
    prefill: float | None = None
    steps: list[float] = field(default_factory=list)
    input_tokens: int = 0  # padded input width of the batch
    cache_bytes: dict[str, int] = field(default_factory=dict)  # KV cache at the end, by part
    cache_tokens: dict[str, int] = field(default_factory=dict)  # positions per row the cache holds, by part


class _Clock:
    """Timestamps: ``perf_counter`` floats on CPU, recorded CUDA events on GPU."""

    def __init__(self, device: torch.device, clock: Callable[[], float] = time.perf_counter):
        self.cuda = device.type == "cuda"
        self.clock = clock

    def mark(self):
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return self.clock()

    def elapsed(self, start, end) -> float:
        if self.cuda:
            end.synchronize()
            return start.elapsed_time(end) / 1e3
        return end - start


class StepClock(LogitsProcessor):
    """A logits processor that timestamps every generation step and, in fixed mode, suppresses EOS.

    Args:
        clock: timestamps (shared with the batch timer, so all marks are comparable).
        eos_ids: end-of-sequence token ids.
        fixed: suppress EOS so every row decodes to ``max_new_tokens``.
    """

    def __init__(self, clock: _Clock, eos_ids: set[int], fixed: bool):
        self.clock = clock
        self.eos_ids = sorted(eos_ids)
        self.fixed = fixed
        self.marks: list = []
        self.last_scores: torch.Tensor | None = None  # kept by reference, checked once after the batch
        self._eos: torch.Tensor | None = None
        self._stop: torch.Tensor | None = None  # (B,) step at which greedy decoding picked EOS, -1 if not yet

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        step = len(self.marks)
        self.marks.append(self.clock.mark())
        self.last_scores = scores
        if self.fixed and self.eos_ids:
            # Device-side only: no host synchronisation and no copy of the scores per step.
            if self._stop is None:
                self._eos = torch.tensor(self.eos_ids, device=scores.device)
                self._stop = torch.full((scores.shape[0],), -1, dtype=torch.long, device=scores.device)
            picked_eos = torch.isin(scores.argmax(dim=-1), self._eos)  # greedy's pick before EOS is masked
            self._stop.masked_fill_(picked_eos & (self._stop < 0), step)
            scores.index_fill_(1, self._eos, torch.finfo(scores.dtype).min)
        return scores

    @property
    def natural_stop(self) -> list[int | None] | None:
        """Per row, the step at which greedy decoding would have stopped (None: it never picked EOS);
        read after the batch (one host synchronisation). None outside the fixed mode."""
        if self._stop is None:
            return None
        return [None if s < 0 else s for s in self._stop.tolist()]


@dataclass
class Timer:
    """Times batches of generation on ``device``; ``clock`` is injectable for tests."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    clock: Callable[[], float] = time.perf_counter
    mode: str = "natural"
    repeats: int = 1  # timed passes per batch (see ``keep_median``)
    batches: list[BatchTiming] = field(default_factory=list)
    pass_spreads: list[float] = field(default_factory=list)  # per batch: (slowest - fastest) / fastest pass
    warmup_s: float = 0.0  # untimed warm-up calls (compiled decoding: compiling each new batch shape)
    warmup_calls: int = 0

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"unknown timing mode {self.mode!r}; choose one of {', '.join(MODES)}")
        if isinstance(self.repeats, bool) or not isinstance(self.repeats, int) or self.repeats < 1:
            raise ValueError(f"timing.repeats must be a whole number >= 1, got {self.repeats!r}")
        self._clock = _Clock(self.device, self.clock)

    def step_clock(self, eos_ids: set[int]) -> StepClock:
        """A fresh per-step clock for the next batch (pass it to ``generate(logits_processor=...)``)."""
        return StepClock(self._clock, eos_ids, fixed=self.mode == "fixed")

    @contextmanager
    def batch(self, samples: int, steps: StepClock | None = None) -> Iterator[BatchTiming]:
        """Time one batch of ``samples`` examples; set ``.new_tokens`` on the yielded record."""
        record = BatchTiming(seconds=0.0, samples=samples)
        start = self._clock.mark()
        yield record
        end = self._clock.mark()
        record.seconds = self._clock.elapsed(start, end)
        if steps is not None and steps.marks:
            record.prefill = self._clock.elapsed(start, steps.marks[0])
            record.steps = [
                self._clock.elapsed(a, b) for a, b in zip(steps.marks, steps.marks[1:], strict=False)
            ]
        self.batches.append(record)

    def keep_median(self, passes: int) -> BatchTiming:
        """Replace the last ``passes`` records (timed passes over the same batch) with their median pass.

        The pass whose total time is the median (the lower middle one for an even count) stands for the
        batch, prefill and steps included; the passes' spread is kept for the summary.
        """
        if passes < 1 or passes > len(self.batches):
            raise ValueError(f"cannot merge {passes} passes: {len(self.batches)} batches timed")
        group = self.batches[-passes:]
        del self.batches[-passes:]
        ordered = sorted(group, key=lambda b: b.seconds)
        median = ordered[(passes - 1) // 2]
        self.batches.append(median)
        if passes > 1 and ordered[0].seconds > 0:
            self.pass_spreads.append((ordered[-1].seconds - ordered[0].seconds) / ordered[0].seconds)
        return median

    def recorded(self) -> tuple[int, int]:
        """How much is recorded now: a mark for :meth:`discard_since`."""
        return len(self.batches), len(self.pass_spreads)

    def discard_since(self, mark: tuple[int, int]) -> None:
        """Drop what was recorded after ``mark`` (an attempt that ran out of memory and is redone: a batch
        timed inside it raised and never got a record, but earlier passes of ``repeats`` did)."""
        del self.batches[mark[0] :], self.pass_spreads[mark[1] :]

    def summary(self) -> dict[str, float | int | str | None]:
        """Totals and medians (with spread) of everything timed so far."""
        seconds = sum(b.seconds for b in self.batches)
        samples = sum(b.samples for b in self.batches)
        tokens = sum(b.new_tokens for b in self.batches)
        per_sample = [b.seconds / b.samples for b in self.batches if b.samples]
        prefill = [b.prefill / b.samples for b in self.batches if b.prefill is not None]
        steps = [s for b in self.batches for s in b.steps]
        accounted = sum((b.prefill or 0.0) + sum(b.steps) for b in self.batches)
        return {
            "mode": self.mode,
            "repeats": self.repeats,
            # median over batches of the spread between their timed passes (None with one pass)
            "pass_spread_median": statistics.median(self.pass_spreads) if self.pass_spreads else None,
            "timed_batches": len(self.batches),
            "timed_samples": samples,
            "generated_tokens": tokens,
            "total_s": seconds,
            "time_per_sample_s": seconds / samples if samples else None,
            "tokens_per_s": tokens / seconds if seconds > 0 else None,
            "prefill_s_per_sample": sum(b.prefill or 0.0 for b in self.batches) / samples
            if prefill
            else None,
            "decode_s_per_token": statistics.median(steps) if steps else None,
            "decode_steps": len(steps),
            "accounted_fraction": accounted / seconds if seconds > 0 else None,
            "warmup_s": self.warmup_s,
            "warmup_calls": self.warmup_calls,
            **_spread("batch_time_per_sample", per_sample),
            **_spread("prefill_per_sample", prefill),
            **_spread("decode_step", steps),
        }


def _spread(name: str, values: list[float]) -> dict[str, float | None]:
    """Median, quartiles and extremes of ``values`` under ``name``."""
    if not values:
        return {f"{name}_median_s": None}
    q = statistics.quantiles(values, n=4, method="inclusive") if len(values) > 1 else [values[0]] * 3
    return {
        f"{name}_median_s": statistics.median(values),
        f"{name}_q1_s": q[0],
        f"{name}_q3_s": q[2],
        f"{name}_min_s": min(values),
        f"{name}_max_s": max(values),
    }


def _proc_status_kib(field: str) -> int | None:
    """A ``/proc/self/status`` figure in KiB (Linux: ``VmHWM`` peak, ``VmRSS`` current), None elsewhere."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def _vm_hwm_kib() -> int | None:
    return _proc_status_kib("VmHWM")


def _release_freed_memory() -> None:
    """Give memory freed by earlier work back to the OS, so a reset high-water mark starts from what is
    really in use (glibc keeps freed heap pages resident until ``malloc_trim``)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakMemory:
    """The peak memory of one run, however many runs the process has made before (a Hydra sweep runs
    every job in one process, so the process's lifetime peak would carry one job's peak into the next).

    Methods, recorded in ``result.json`` as ``peak_mem_method``:

    - ``cuda_max_memory_allocated``: the CUDA allocator's peak since :meth:`start` (reset there).
    - ``linux_vmhwm_reset``: on Linux, freed memory is returned to the OS, the kernel's resident-set
      high-water mark is reset (``/proc/self/clear_refs``), and ``VmHWM`` is read at the end: the run's
      own peak resident set, the weights included. What the process holds when the run begins (the
      interpreter, the libraries, and whatever earlier jobs left that could not be handed back) is in
      that peak too; ``start_mb`` records it.
    - ``process_maxrss``: where neither is possible, the process's lifetime peak (``ru_maxrss``), an
      upper bound that may include earlier runs in the same process.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.method = "process_maxrss"
        self.start_mb: float | None = None  # resident set (or CUDA allocation) when the run began

    def start(self) -> PeakMemory:
        """Begin the measurement (call before the run loads its model)."""
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            self.method = "cuda_max_memory_allocated"
            self.start_mb = torch.cuda.memory_allocated(self.device) / 2**20
            return self
        _release_freed_memory()
        try:
            Path("/proc/self/clear_refs").write_text("5")  # "5": reset the peak RSS (Linux >= 4.0)
        except OSError:
            return self
        if _vm_hwm_kib() is not None:
            self.method = "linux_vmhwm_reset"
            rss = _proc_status_kib("VmRSS")
            self.start_mb = rss / 2**10 if rss is not None else None
        return self

    def peak_mb(self) -> float:
        """Peak memory since :meth:`start`, in MiB (see the class docstring for what is measured)."""
        if self.method == "cuda_max_memory_allocated":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        if self.method == "linux_vmhwm_reset":
            hwm = _vm_hwm_kib()
            if hwm is not None:
                return hwm / 2**10
        return peak_memory_mb(self.device)


def peak_memory_mb(device: torch.device) -> float:
    """Lifetime peak memory: the CUDA allocator's peak on GPU; on CPU the process's peak resident set (the
    model included). Use :class:`PeakMemory` for the peak of one run."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10  # bytes on macOS, KiB on Linux


def cache_bytes(cache) -> int:
    """Bytes held by a transformers KV cache (``DynamicCache``, or ``EncoderDecoderCache``: self + cross)."""
    return sum(kv_cache_parts(cache).values())


def _layer_tensors(cache) -> Iterator[torch.Tensor]:
    for layer in getattr(cache, "layers", []):
        for t in (getattr(layer, "keys", None), getattr(layer, "values", None)):
            if isinstance(t, torch.Tensor):
                yield t


def cache_tensors(cache) -> Iterator[torch.Tensor]:
    """Every key and value tensor of a KV cache (self- and, for encoder-decoders, cross-attention)."""
    if cache is None:
        return
    if hasattr(cache, "self_attention_cache"):
        yield from _layer_tensors(cache.self_attention_cache)
        yield from _layer_tensors(cache.cross_attention_cache)
    else:
        yield from _layer_tensors(cache)


def kv_cache_positions(cache) -> dict[str, int]:
    """Positions per row a KV cache holds, by part (``self``, and ``cross`` for encoder-decoder caches):
    the length of its key tensors, which for a static cache is the allocated length, as its bytes are."""
    if cache is None:
        return {}
    parts = (
        {"self": cache.self_attention_cache, "cross": cache.cross_attention_cache}
        if hasattr(cache, "self_attention_cache")
        else {"self": cache}
    )
    out = {}
    for part, sub in parts.items():
        first = next(_layer_tensors(sub), None)
        if first is not None:
            out[part] = int(first.shape[-2])
    return out


def kv_cache_parts(cache) -> dict[str, int]:
    """Bytes of a KV cache by part: ``self`` (and ``cross`` for encoder-decoder caches)."""
    if cache is None:
        return {"self": 0}
    if hasattr(cache, "self_attention_cache"):
        return {
            "self": cache_bytes(cache.self_attention_cache),
            "cross": cache_bytes(cache.cross_attention_cache),
        }
    return {"self": sum(t.numel() * t.element_size() for t in _layer_tensors(cache))}
