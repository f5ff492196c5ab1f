"""Timing stage: one timer API for every path that measures inference cost.

The clock is ``time.perf_counter``; on CUDA the device is synchronised before each reading, so a figure
covers the kernels it launched and not only their launch. Warm-up work is run outside the timer, so what
is recorded is steady-state cost. Each timed batch is kept, and the summary reports totals (time per
sample, the paper's T_infer analogue; tokens per second) and the median and spread over batches.
"""

from __future__ import annotations

import resource
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch


@dataclass
class BatchTiming:
    """One timed batch."""

    seconds: float
    samples: int
    new_tokens: int


@dataclass
class Timer:
    """Times batches of generation on ``device``; ``clock`` is injectable for tests."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    clock: object = time.perf_counter
    batches: list[BatchTiming] = field(default_factory=list)

    def _now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return self.clock()

    @contextmanager
    def batch(self, samples: int) -> Iterator[BatchTiming]:
        """Time one batch of ``samples`` examples; set ``.new_tokens`` on the yielded record."""
        record = BatchTiming(seconds=0.0, samples=samples, new_tokens=0)
        start = self._now()
        yield record
        record.seconds = self._now() - start
        self.batches.append(record)

    def summary(self) -> dict[str, float | int | None]:
        """Totals and per-batch statistics of everything timed so far."""
        seconds = sum(b.seconds for b in self.batches)
        samples = sum(b.samples for b in self.batches)
        tokens = sum(b.new_tokens for b in self.batches)
        per_sample = [b.seconds / b.samples for b in self.batches if b.samples]
        return {
            "timed_batches": len(self.batches),
            "timed_samples": samples,
            "generated_tokens": tokens,
            "total_s": seconds,
            "time_per_sample_s": seconds / samples if samples else None,
            "tokens_per_s": tokens / seconds if seconds > 0 else None,
            "batch_time_per_sample_median_s": statistics.median(per_sample) if per_sample else None,
            "batch_time_per_sample_min_s": min(per_sample) if per_sample else None,
            "batch_time_per_sample_max_s": max(per_sample) if per_sample else None,
        }


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory of this process so far: CUDA allocator peak on GPU, resident set size on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10  # bytes on macOS, KiB on Linux


def cache_bytes(cache) -> int:
    """Bytes held by a transformers KV cache (``DynamicCache``, or ``EncoderDecoderCache``: self + cross)."""
    if cache is None:
        return 0
    if hasattr(cache, "self_attention_cache"):
        return cache_bytes(cache.self_attention_cache) + cache_bytes(cache.cross_attention_cache)
    total = 0
    for layer in getattr(cache, "layers", []):
        for t in (getattr(layer, "keys", None), getattr(layer, "values", None)):
            if isinstance(t, torch.Tensor):
                total += t.numel() * t.element_size()
    return total
