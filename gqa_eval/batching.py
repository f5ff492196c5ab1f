"""Batches that fit: fixed-size batches, a token budget, and ``batch_size=auto``'s out-of-memory back-off.

``generate()`` takes its batches from the front of the examples still to do, which are sorted longest
first, through a :class:`BatchPlan`:

- ``batch_size=N``: N rows a batch, as always; ``batch_size=auto``: from ``max_batch_size`` down.
- ``batch_tokens=T`` (a token budget, off when null): no more rows than fit rows x (padded input +
  ``max_new_tokens``) <= T, so batches of shorter inputs hold more rows (always at least one).
- Out of memory under ``auto`` (:func:`is_out_of_memory`): the attempt is dropped (its timing records too),
  memory is freed, the size is halved and the same examples are taken again, so the failed batch is redone
  in halves. Later batches keep the size that worked: being sorted longest first they are no longer, so it
  still fits; auto never grows back (a token budget is what lets batches of short inputs grow). Only
  completed batches reach ``on_batch``, so no prediction is lost or written twice.
- Out of memory at one row, or with a fixed ``batch_size``: :class:`BatchOutOfMemoryError`, one line
  naming the fix.

The back-off is around a whole batch, outside the timed region: a fixed ``batch_size`` runs the same
batches, with the same per-step work, as it did before ``auto`` existed.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import torch

log = logging.getLogger("gqa_eval")
T = TypeVar("T")

AUTO = "auto"
DEFAULT_MAX_BATCH_SIZE = 64
# What a failed CPU allocation says (a RuntimeError, not torch.OutOfMemoryError); on Linux memory is
# usually overcommitted and the kernel kills the process instead, so on CPU this is rare.
CPU_OUT_OF_MEMORY = "DefaultCPUAllocator: can't allocate memory"


class BatchOutOfMemoryError(torch.OutOfMemoryError, ValueError):
    """Out of memory at a batch that cannot be made smaller (one row, or a fixed ``batch_size``).

    A ``ValueError`` as well, so that the command line reports it in one line, as it does bad settings.
    """


@dataclass
class BatchStats:
    """What the batching did: the rows of every completed batch, and how many attempts ran out of memory."""

    sizes: list[int] = field(default_factory=list)
    oom_retries: int = 0

    def result(self) -> dict[str, object]:
        """The ``result.json`` entries: the batch sizes used (largest first) and the out-of-memory retries."""
        return {"batch_sizes_used": sorted(set(self.sizes), reverse=True), "oom_retries": self.oom_retries}


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def check_settings(batch_size: object, max_batch_size: object, batch_tokens: object) -> None:
    """Refuse, in one line naming the key and the accepted forms, a batching setting of the wrong kind."""
    if not (_whole(batch_size) or batch_size == AUTO):
        raise ValueError(
            f"batch_size must be a whole number >= 1, got batch_size={batch_size!r}; set batch_size=N, or "
            "batch_size=auto for the largest batch that fits the device (from max_batch_size down)"
        )
    if not _whole(max_batch_size):
        raise ValueError(
            "max_batch_size (where batch_size=auto starts) must be a whole number >= 1, "
            f"got max_batch_size={max_batch_size!r}"
        )
    if batch_tokens is not None and not _whole(batch_tokens):
        raise ValueError(
            "batch_tokens (rows x (input + new tokens) per batch) must be a whole number >= 1 or null "
            f"for no budget, got batch_tokens={batch_tokens!r}"
        )


def is_out_of_memory(err: BaseException) -> bool:
    """Whether ``err`` is an allocation the device refused: ``torch.OutOfMemoryError`` (CUDA), or the CPU
    allocator's RuntimeError (matched by its message, nothing else)."""
    if isinstance(err, torch.OutOfMemoryError):
        return True
    return isinstance(err, RuntimeError) and CPU_OUT_OF_MEMORY in str(err)


def _reason(err: BaseException) -> str:
    """The first sentences of torch's out-of-memory message, on one line (what could not be allocated)."""
    text = " ".join(str(err).split())
    if CPU_OUT_OF_MEMORY in text:
        text = text[text.index(CPU_OUT_OF_MEMORY) :]
    text = ". ".join(text.split(". ")[:2]).rstrip(".")
    return text[:200] or type(err).__name__


def free_memory(device: torch.device) -> None:
    """Hand back what a failed attempt held: collect its tensors, then empty the CUDA allocator's cache."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


class BatchPlan:
    """The examples still to generate and how many to take at a time (see the module docstring).

    Args:
        order: example indices, longest input first.
        lengths: input tokens by example index.
        batch_size: a whole number, or ``"auto"``.
        new_tokens: the task's ``max_new_tokens`` (for the token budget and the messages).
        max_batch_size: where ``auto`` starts.
        batch_tokens: the token budget per batch, or None.
        device: the model's device (what :func:`free_memory` frees).
        stats: filled with the completed batches' sizes and the retries (a fresh one if not given).
    """

    def __init__(
        self,
        order: Sequence[int],
        lengths: Mapping[int, int] | Sequence[int],
        *,
        batch_size: int | str,
        new_tokens: int,
        max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
        batch_tokens: int | None = None,
        device: torch.device | None = None,
        stats: BatchStats | None = None,
    ):
        check_settings(batch_size, max_batch_size, batch_tokens)
        self.auto = batch_size == AUTO
        self.size: int = max_batch_size if self.auto else batch_size  # rows at most, from now on
        self.order = list(order)
        self.lengths = lengths
        self.new_tokens = new_tokens
        self.batch_tokens = batch_tokens
        self.device = device if device is not None else torch.device("cpu")
        self.stats = stats if stats is not None else BatchStats()
        self._next = 0  # examples before it are done

    def _rows(self, start: int) -> int:
        rows = self.size
        if self.batch_tokens is not None:  # the first row is the longest: the batch's padded width
            per_row = self.lengths[self.order[start]] + self.new_tokens
            rows = min(rows, self.batch_tokens // per_row)
        return max(1, rows)  # at least one row: every batch makes progress

    def peek(self) -> list[int]:
        """The next batch (empty when every example is done). It stays next until :meth:`done`; after an
        out-of-memory back-off it is offered again, fewer rows at a time."""
        if self._next >= len(self.order):
            return []
        return self.order[self._next : self._next + self._rows(self._next)]

    def done(self, idx: Sequence[int]) -> None:
        """Mark the batch from :meth:`peek` as generated."""
        if list(idx) != self.peek():
            raise ValueError("done() takes the batch peek() offered")
        self._next += len(idx)
        self.stats.sizes.append(len(idx))

    def batches_left(self) -> int:
        """Batches still to do at the current size (for the progress bar)."""
        count, start = 0, self._next
        while start < len(self.order):
            start += self._rows(start)
            count += 1
        return count

    def attempt(self, fn: Callable[[list[int]], T], idx: list[int], timer=None) -> T | None:
        """``fn(idx)``, or None when it ran out of memory and the plan backed off: what ``timer`` recorded
        during the attempt is dropped, memory is freed, and :meth:`peek` offers the same examples again,
        fewer at a time. Any other error, and out of memory that no smaller batch can avoid, is raised.
        (``fn`` must not return None.)"""
        recorded = timer.recorded() if timer is not None else None
        try:
            return fn(idx)
        except Exception as err:
            if not is_out_of_memory(err):
                raise
            self._back_off(idx, err)
        # Here, after the except clause, the error and its traceback (which holds the failed attempt's
        # frames and their tensors) are gone, so collecting frees that memory.
        if timer is not None:
            timer.discard_since(recorded)
        free_memory(self.device)
        return None

    def _back_off(self, idx: list[int], err: BaseException) -> None:
        what = (
            f"out of memory generating {len(idx)} example(s) of up to {self.lengths[idx[0]]} input tokens "
            f"+ {self.new_tokens} new on {self.device} ({_reason(err)})"
        )
        if not self.auto:
            raise BatchOutOfMemoryError(
                f"{what}: set batch_size=auto to back off to the largest batch that fits, a smaller "
                "batch_size, or a token budget batch_tokens=N"
            ) from err
        if len(idx) == 1:
            raise BatchOutOfMemoryError(
                f"{what}, at batch size 1 (batch_size=auto can go no lower): set a shorter "
                "task.max_input_tokens (or task.max_new_tokens), dtype=bfloat16, or use a device with more "
                "memory"
            ) from err
        self.size = len(idx) // 2
        self.stats.oom_retries += 1
        log.warning("%s; batch_size=auto retries them %d at a time", what, self.size)
