"""Generation stage: batched greedy decoding over length-sorted batches, results handed out per batch.

Examples are sorted by input length (longest first, so an out-of-memory batch shows at once and batches
carry little padding); ``gqa_eval.batching`` decides how many go in each batch (``batch_size``, ``auto``
with its out-of-memory back-off, a token budget). Each batch is greedy-decoded (``do_sample=False,
num_beams=1``, as the paper) to the task's output length and timed by ``timing.Timer``: wall time, time
to first token and every decode step (through a logits processor), and the KV cache it ends with. In the
fixed-work mode every example decodes exactly ``max_new_tokens`` tokens and the prediction is cut where
greedy decoding would have stopped. One untimed warm-up call runs first; with ``timer.repeats`` > 1 every
batch is generated that many times and the median pass is kept (``Timer.keep_median``). Each completed
batch goes to ``on_batch`` as soon as it is done, so the caller can stream it to disk.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm
from transformers import LogitsProcessorList, StoppingCriteriaList, StopStringCriteria

from gqa_eval.batching import DEFAULT_MAX_BATCH_SIZE, BatchPlan, BatchStats
from gqa_eval.decode_path import DecodePath, size_static_cache_per_batch
from gqa_eval.timing import StepClock, Timer, cache_tensors, kv_cache_parts, kv_cache_positions

# Plain greedy decoding, whatever the checkpoint's generation_config.json says: generate() takes every
# setting it is not given from there, and fine-tuned checkpoints carry their own search (BART / Pegasus:
# num_beams, min_length, no_repeat_ngram_size, length_penalty, forced_eos_token_id; chat models: sampling
# and a repetition_penalty). Kept from it: the EOS, pad and decoder-start ids, forced_bos_token_id (BART's
# <s>) and bad_words_ids (Marian's pad), which say what the model's output is, not how it is searched for.
GREEDY = {
    "do_sample": False, "num_beams": 1, "min_length": 0, "min_new_tokens": None, "no_repeat_ngram_size": 0,
    "encoder_no_repeat_ngram_size": 0, "repetition_penalty": 1.0, "encoder_repetition_penalty": 1.0,
    "length_penalty": 1.0, "early_stopping": False, "forced_eos_token_id": None,
    "exponential_decay_length_penalty": None,
}  # fmt: skip


class NonFiniteLogitsError(FloatingPointError):
    """The model produced NaN or infinite logits."""


def _pad(
    batch: Sequence[Sequence[int]], pad_id: int, left: bool, multiple: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    width = -(-max(len(ids) for ids in batch) // multiple) * multiple
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, ids in enumerate(batch):
        cols = slice(width - len(ids), width) if left else slice(0, len(ids))
        input_ids[i, cols] = torch.tensor(ids, dtype=torch.long)
        mask[i, cols] = 1
    return input_ids, mask


def _eos_lengths(rows: list[list[int]], eos_ids: set[int], stops: list[int | None] | None) -> list[int]:
    """Tokens each row generated when decoding stops at EOS (EOS included), from the output or, in the
    fixed-work mode, from the step at which greedy decoding would have picked EOS."""
    if stops is not None:
        return [len(row) if s is None else s + 1 for row, s in zip(rows, stops, strict=True)]
    counts = []
    for row in rows:
        n = len(row)
        for j, tok in enumerate(row):
            if tok in eos_ids:
                n = j + 1
                break
        counts.append(n)
    return counts


def _stop_string_length(tokenizer, row: list[int], n: int, stop_strings: Sequence[str]) -> int:
    """The fewest leading tokens of ``row[:n]`` whose text contains a stop string (``n`` if none does).

    Containment only grows with the prefix, so a binary search finds the token that completes the first
    stop string (the one at which transformers' ``StopStringCriteria`` ends generation): a few decodes
    per row, after the batch, outside the timed region.
    """

    def contains(k: int) -> bool:
        text = tokenizer.decode(row[:k], skip_special_tokens=True)
        return any(stop in text for stop in stop_strings)

    if not stop_strings or not contains(n):
        return n
    lo, hi = 1, n  # contains(hi) holds
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if contains(mid) else (mid + 1, hi)
    return hi


def cut_at_stop_strings(text: str, stop_strings: Sequence[str]) -> str:
    """``text`` up to the first occurrence of any stop string (the stop string itself dropped)."""
    cut = min((text.find(s) for s in stop_strings if s in text), default=-1)
    return text if cut < 0 else text[:cut]


def generate(
    model,
    tokenizer,
    inputs: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    batch_size: int | str,
    timer: Timer,
    on_batch: Callable[[list[int], list[str]], None] | None = None,
    skip: set[int] | frozenset[int] = frozenset(),
    progress: bool = True,
    description: str = "generate",
    stop_strings: Sequence[str] = (),
    decode: DecodePath | None = None,
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
    batch_tokens: int | None = None,
    batch_stats: BatchStats | None = None,
    forced_bos_token_id: int | None = None,
    newline_token: str | None = None,
) -> dict[int, str]:
    """Greedy-decode every input not in ``skip``.

    Args:
        model: a seq2seq or causal LM in eval mode.
        tokenizer: its tokenizer (for pad ids and decoding).
        inputs: token ids per example.
        max_new_tokens: the task's output length.
        batch_size: examples per ``generate`` call, or ``"auto"``: from ``max_batch_size`` down, halved
            and the batch redone on out of memory (:mod:`gqa_eval.batching`).
        timer: records every batch; its ``mode`` (natural or fixed) decides whether EOS stops decoding.
        on_batch: called with (example indices, predictions) after each batch.
        skip: indices not to generate (already predicted).
        progress: show a progress bar.
        description: progress bar label.
        stop_strings: strings that end a prediction (a decoder-only prompt's answer ends at a newline):
            natural-mode generation stops at the token that completes one, and in both modes the
            prediction is cut before the first one.
        decode: eager (the default) or a static KV cache, compiled or not (:mod:`gqa_eval.decode_path`);
            compiled, every batch of a shape not seen yet gets an untimed warm-up first (the compile or
            CUDA-graph recording), and its time goes to ``timer.warmup_s``.
        max_batch_size: where ``batch_size="auto"`` starts.
        batch_tokens: a token budget: no more rows a batch than rows x (padded input + max_new_tokens)
            <= batch_tokens (at least one); None: no budget.
        batch_stats: filled with the completed batches' sizes and the out-of-memory retries.
        forced_bos_token_id: the token every output starts with (a multilingual checkpoint's target
            language, :func:`gqa_eval.tasks.set_languages`); None: the checkpoint's own, if it has one.
        newline_token: a token the checkpoint writes for a line break (Pegasus: ``<n>``), turned into
            ``\n`` in the predictions; None: none.

    Returns:
        Prediction text by example index.

    Raises:
        NonFiniteLogitsError: the model produced NaN/inf logits or K/V (a broken checkpoint or dtype
            overflow); checked once per batch, after it.
        BatchOutOfMemoryError: out of memory with a fixed ``batch_size``, or at one row under ``auto``.
    """
    device = next(model.parameters()).device
    plan = _plan_batches(
        inputs, skip, device, batch_size=batch_size, max_new_tokens=max_new_tokens,
        max_batch_size=max_batch_size, batch_tokens=batch_tokens, batch_stats=batch_stats,
    )  # fmt: skip
    stop_strings = [s for s in stop_strings if s]
    batches = _Batches(
        model, tokenizer, inputs, device=device, timer=timer, decode=decode or DecodePath(),
        max_new_tokens=max_new_tokens, stop_strings=stop_strings, newline_token=newline_token,
        criteria=_stopping_criteria(tokenizer, stop_strings, timer.mode),
        search=_greedy_search(forced_bos_token_id),
    )  # fmt: skip
    return _run_plan(plan, batches.one_batch, timer, on_batch, progress=progress, description=description)


def _plan_batches(
    inputs: Sequence[Sequence[int]],
    skip: set[int] | frozenset[int],
    device: torch.device,
    *,
    batch_size: int | str,
    max_new_tokens: int,
    max_batch_size: int,
    batch_tokens: int | None,
    batch_stats: BatchStats | None,
) -> BatchPlan:
    """The examples still to generate, longest input first (an out-of-memory batch shows at once and
    batches carry little padding), and how many go in each batch; bad batch settings are refused here."""
    order = sorted((i for i in range(len(inputs)) if i not in skip), key=lambda i: -len(inputs[i]))
    return BatchPlan(
        order, [len(ids) for ids in inputs], batch_size=batch_size, new_tokens=max_new_tokens,
        max_batch_size=max_batch_size, batch_tokens=batch_tokens, device=device, stats=batch_stats,
    )  # fmt: skip


def _stopping_criteria(tokenizer, stop_strings: list[str], mode: str) -> StoppingCriteriaList:
    """The stop-string criteria, built once (it scans the vocabulary), and only where generation may stop
    early: in the fixed-work mode every row decodes max_new_tokens and the prediction is cut afterwards."""
    criteria = StoppingCriteriaList()
    if stop_strings and mode == "natural":
        criteria.append(StopStringCriteria(tokenizer=tokenizer, stop_strings=stop_strings))
    return criteria


def _greedy_search(forced_bos_token_id: int | None) -> dict:
    """The search settings, made once (the same for every batch): :data:`GREEDY`, plus the target
    language's first token where one is given."""
    search = dict(GREEDY)
    if forced_bos_token_id is not None:
        search["forced_bos_token_id"] = forced_bos_token_id
    return search


def _run_plan(
    plan: BatchPlan,
    one_batch: Callable[[list[int]], list[str]],
    timer: Timer,
    on_batch: Callable[[list[int], list[str]], None] | None,
    *,
    progress: bool,
    description: str,
) -> dict[int, str]:
    """Generate the plan's batches in turn, handing each to ``on_batch`` as soon as it is done (so the
    caller can stream it to disk); the predictions by example index."""
    predictions: dict[int, str] = {}
    with tqdm(total=plan.batches_left(), desc=description, unit="batch", disable=not progress) as bar:
        while idx := plan.peek():  # the next examples, longest first
            # Out of memory under batch_size=auto: None, nothing of the attempt kept (its timing records
            # dropped, nothing passed on), and the same examples come again, fewer at a time.
            texts = plan.attempt(one_batch, idx, timer)
            if texts is None:
                bar.total = bar.n + plan.batches_left()
                bar.refresh()
                continue
            plan.done(idx)
            bar.update()
            predictions.update(zip(idx, texts, strict=True))
            if on_batch is not None:
                on_batch(idx, texts)
    return predictions


@dataclass
class _FirstPass:
    """What is kept of a batch's first timed pass (its tokens are the predictions; later passes, with
    ``timer.repeats`` > 1, only time the same work)."""

    tokens: torch.Tensor  # (B, new tokens): the generated tokens, prompt and decoder start dropped
    clock: StepClock
    input_width: int  # padded input tokens per row
    cache_bytes: dict[str, int]  # the KV cache it ended with, by part
    cache_tokens: dict[str, int]  # positions per row that cache holds, by part


class _Batches:
    """What every batch of one :func:`generate` call shares, worked out once, and the steps each batch
    goes through: warm-up, the timed generate() passes, the stop at EOS or a stop string, the record."""

    def __init__(
        self, model, tokenizer, inputs: Sequence[Sequence[int]], *, device: torch.device, timer: Timer,
        decode: DecodePath, max_new_tokens: int, stop_strings: list[str], newline_token: str | None,
        criteria: StoppingCriteriaList, search: dict,
    ):  # fmt: skip
        self.model, self.tokenizer, self.inputs, self.device = model, tokenizer, inputs, device
        self.timer, self.decode, self.max_new_tokens = timer, decode, max_new_tokens
        self.stop_strings, self.newline_token = stop_strings, newline_token
        self.criteria, self.search = criteria, search
        self.decoder_only = not model.config.is_encoder_decoder
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        eos = model.generation_config.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos]) - {None}
        self.warmed: set[tuple[int, int]] = set()  # (rows, padded width) already warmed up

    def run(self, idx: list[int], new_tokens: int, processors: list) -> tuple[torch.Tensor, object, int]:
        """One ``model.generate`` call on ``idx``, padded: its new tokens, KV cache and padded width. The
        timed pass is this call, so it holds only what each batch needs before the model runs."""
        rows = [self.inputs[i] for i in idx]
        input_ids, mask = _pad(
            rows, self.pad_id, left=self.decoder_only, multiple=self.decode.pad_to_multiple_of
        )
        extra = self.decode.generate_kwargs(input_ids.shape[1], self.max_new_tokens, self.decoder_only)
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=input_ids.to(self.device),
                attention_mask=mask.to(self.device),
                max_new_tokens=new_tokens,
                **self.search,
                pad_token_id=self.pad_id,
                logits_processor=LogitsProcessorList(processors),
                stopping_criteria=self.criteria,
                return_dict_in_generate=True,
                output_scores=False,
                **extra,
            )
        # seq2seq output starts with the decoder start token; decoder-only repeats the prompt.
        new = out.sequences[:, input_ids.shape[1] :] if self.decoder_only else out.sequences[:, 1:]
        return new, returned_cache(out), input_ids.shape[1]

    def warm_up(self, idx: list[int]) -> None:
        """An untimed call of a few tokens: allocator, kernels, caches and, compiled, the step for this
        batch's shape. Eager, only the first batch gets one; compiled, every new (rows, width)."""
        shape = (len(idx), self.decode.padded_width(max(len(self.inputs[i]) for i in idx)))
        if shape in self.warmed or (self.warmed and not self.decode.compiled):
            return
        start = time.perf_counter()
        self.run(idx, min(4, self.max_new_tokens), [])
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.timer.warmup_s += time.perf_counter() - start
        self.timer.warmup_calls += 1
        self.warmed.add(shape)

    def one_batch(self, idx: list[int]) -> list[str]:
        """Warm up if needed, generate and time ``idx`` (``timer.repeats`` passes); its predictions."""
        if self.decode.static:  # once per batch, before its first call, outside the timed region
            size_static_cache_per_batch(self.model)
        self.warm_up(idx)
        first = self.timed_passes(idx)
        record = self.timer.keep_median(self.timer.repeats)
        kept, lengths = self.natural_stops(first)
        fixed = self.timer.mode == "fixed"
        record.new_tokens = first.tokens.numel() if fixed else sum(lengths)
        record.input_tokens = first.input_width
        record.cache_bytes = first.cache_bytes
        record.cache_tokens = first.cache_tokens
        return self.texts(kept)

    def timed_passes(self, idx: list[int]) -> _FirstPass:
        """Generate ``idx`` ``timer.repeats`` times, each pass timed (greedy decoding: every pass does the
        same work); the first pass's tokens, checked finite once, after it."""
        for rep in range(self.timer.repeats):
            clock = self.timer.step_clock(self.eos_ids)
            # The timed region is the generate() call: no host synchronisation and no check over the
            # vocabulary per step; the clock only timestamps (and, in fixed mode, masks EOS on the device).
            with self.timer.batch(len(idx), clock):
                out, cache, width = self.run(idx, self.max_new_tokens, [clock])
            if rep == 0:  # the first pass's tokens are the predictions
                check_finite(cache, clock.last_scores, idx)
                first = _FirstPass(out, clock, width, kv_cache_parts(cache), kv_cache_positions(cache))
            del out, cache  # one pass's cache alive at a time: peak memory is that of one pass
        return first

    def natural_stops(self, first: _FirstPass) -> tuple[list[list[int]], list[int]]:
        """Each row's tokens up to where greedy decoding stops (EOS or the token completing a stop
        string), and how many tokens that stop counts as generated (EOS included)."""
        rows, fixed = first.tokens.tolist(), self.timer.mode == "fixed"
        natural_stop = first.clock.natural_stop if fixed else None
        eos_lengths = _eos_lengths(rows, self.eos_ids, natural_stop)  # the batch read to the host once
        kept, lengths = [], []
        for i, (row, n) in enumerate(zip(rows, eos_lengths, strict=True)):
            # In fixed mode the position where greedy decoding picked EOS holds another token: drop it.
            text_n = n - 1 if natural_stop is not None and natural_stop[i] is not None else n
            stop_n = _stop_string_length(self.tokenizer, row, text_n, self.stop_strings)
            kept.append(row[:stop_n])
            lengths.append(stop_n if stop_n < text_n else n)
        return kept, lengths

    def texts(self, kept: list[list[int]]) -> list[str]:
        """The natural prediction in both modes: the kept tokens decoded, line breaks restored, then cut
        before the stop string."""
        texts = self.tokenizer.batch_decode(kept, skip_special_tokens=True)
        if self.newline_token:
            texts = [t.replace(self.newline_token, "\n") for t in texts]
        return [cut_at_stop_strings(t, self.stop_strings).strip() for t in texts]


def returned_cache(out) -> object:
    """The KV cache generate() returned: ``out.cache`` from transformers 5.24, ``past_key_values`` before."""
    cache = getattr(out, "cache", None)
    return cache if cache is not None else getattr(out, "past_key_values", None)


def check_finite(cache, last_scores: torch.Tensor | None, rows: Sequence[int]) -> None:
    """Raise :class:`NonFiniteLogitsError` if a batch produced NaN/inf, checked once, after the batch.

    The KV cache holds every layer's keys and values at every position, so a NaN or overflow anywhere in
    the residual stream shows there; the last step's logits cover the final norm and the LM head. (-inf
    logits are how processors mask tokens and are allowed.)
    """
    tensors = [t for t in cache_tensors(cache) if t.is_floating_point()]
    flags = [~torch.isfinite(t).flatten(1).all(dim=1) for t in tensors]  # (B,) per tensor
    if last_scores is not None:
        flags.append((torch.isnan(last_scores) | torch.isposinf(last_scores)).any(dim=-1))
    if not flags:
        return
    broken = torch.stack([f.to(flags[0].device) for f in flags]).any(dim=0)
    if broken.any():  # one host synchronisation per batch, after its timing
        bad = [rows[i] for i in broken.nonzero().flatten().tolist()]
        raise NonFiniteLogitsError(
            f"non-finite (NaN/inf) logits or keys/values while generating examples {bad}: "
            "the checkpoint is broken or the dtype overflows; try dtype=float32"
        )
