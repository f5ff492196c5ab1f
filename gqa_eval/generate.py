"""Generation stage: batched greedy decoding over length-sorted batches, results handed out per batch.

Examples are sorted by input length (longest first, so an out-of-memory batch shows at once and batches
carry little padding). Each batch is greedy-decoded (``do_sample=False, num_beams=1``, as the paper) to
the task's output length and timed by ``timing.Timer``: wall time, time to first token and every decode
step (through a logits processor), and the KV cache it ends with. In the fixed-work mode every example
decodes exactly ``max_new_tokens`` tokens and the prediction is cut where greedy decoding would have
stopped. One untimed warm-up call runs first; with ``timer.repeats`` > 1 every batch is generated that
many times and the median pass is kept (``Timer.keep_median``). Each batch goes to ``on_batch`` as soon as
it is done, so the caller can stream it to disk.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from tqdm.auto import tqdm
from transformers import LogitsProcessorList

from gqa_eval.timing import Timer, kv_cache_parts


class NonFiniteLogitsError(FloatingPointError):
    """The model produced NaN or infinite logits."""


def _pad(batch: Sequence[Sequence[int]], pad_id: int, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(ids) for ids in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, ids in enumerate(batch):
        cols = slice(width - len(ids), width) if left else slice(0, len(ids))
        input_ids[i, cols] = torch.tensor(ids, dtype=torch.long)
        mask[i, cols] = 1
    return input_ids, mask


def _natural_lengths(new: torch.Tensor, eos_ids: set[int], stops: list[int | None] | None) -> list[int]:
    """Tokens each row generated when decoding stops at EOS (EOS included), from the output or, in the
    fixed-work mode, from the step at which greedy decoding would have picked EOS."""
    if stops is not None:
        return [new.shape[1] if s is None else s + 1 for s in stops]
    counts = []
    for row in new.tolist():
        n = len(row)
        for j, tok in enumerate(row):
            if tok in eos_ids:
                n = j + 1
                break
        counts.append(n)
    return counts


def generate(
    model,
    tokenizer,
    inputs: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    batch_size: int,
    timer: Timer,
    on_batch: Callable[[list[int], list[str]], None] | None = None,
    skip: set[int] | frozenset[int] = frozenset(),
    progress: bool = True,
    description: str = "generate",
) -> dict[int, str]:
    """Greedy-decode every input not in ``skip``.

    Args:
        model: a seq2seq or causal LM in eval mode.
        tokenizer: its tokenizer (for pad ids and decoding).
        inputs: token ids per example.
        max_new_tokens: the task's output length.
        batch_size: examples per ``generate`` call.
        timer: records every batch; its ``mode`` (natural or fixed) decides whether EOS stops decoding.
        on_batch: called with (example indices, predictions) after each batch.
        skip: indices not to generate (already predicted).
        progress: show a progress bar.
        description: progress bar label.

    Returns:
        Prediction text by example index.

    Raises:
        NonFiniteLogitsError: the model produced NaN/inf logits (a broken checkpoint or dtype overflow).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    decoder_only = not model.config.is_encoder_decoder
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    eos = model.generation_config.eos_token_id
    eos_ids = set(eos if isinstance(eos, list) else [eos]) - {None}
    order = sorted((i for i in range(len(inputs)) if i not in skip), key=lambda i: -len(inputs[i]))
    batches = [order[k : k + batch_size] for k in range(0, len(order), batch_size)]
    device = next(model.parameters()).device

    def run(idx: list[int], new_tokens: int, processors: list) -> tuple[torch.Tensor, object, int]:
        input_ids, mask = _pad([inputs[i] for i in idx], pad_id, left=decoder_only)
        with torch.inference_mode():
            out = model.generate(
                input_ids=input_ids.to(device),
                attention_mask=mask.to(device),
                max_new_tokens=new_tokens,
                do_sample=False,
                num_beams=1,
                pad_token_id=pad_id,
                logits_processor=LogitsProcessorList(processors),
                return_dict_in_generate=True,
                output_scores=False,
            )
        # seq2seq output starts with the decoder start token; decoder-only repeats the prompt.
        new = out.sequences[:, input_ids.shape[1] :] if decoder_only else out.sequences[:, 1:]
        return new, _returned_cache(out), input_ids.shape[1]

    if batches:  # warm-up: allocator, kernels, caches; not timed
        run(batches[0], min(4, max_new_tokens), [])
    predictions: dict[int, str] = {}
    for idx in tqdm(batches, desc=description, unit="batch", disable=not progress):
        for rep in range(timer.repeats):  # greedy decoding: every pass does the same work
            clock = timer.step_clock(eos_ids)
            with timer.batch(len(idx), clock):
                out, cache, width = run(idx, max_new_tokens, [clock, _FiniteCheck()])
            if rep == 0:  # the first pass's tokens are the predictions
                new, steps = out, clock
                cache_bytes = kv_cache_parts(cache)
                cache_tokens = {"self": cache.get_seq_length()} if cache is not None else {}
            del out, cache  # one pass's cache alive at a time: peak memory is that of one pass
        record = timer.keep_median(timer.repeats)
        lengths = _natural_lengths(new, eos_ids, steps.natural_stop if timer.mode == "fixed" else None)
        record.new_tokens = new.numel() if timer.mode == "fixed" else sum(lengths)
        record.input_tokens = width
        record.cache_bytes = cache_bytes
        record.cache_tokens = cache_tokens
        if "cross" in record.cache_bytes:
            record.cache_tokens["cross"] = width
        if timer.mode == "fixed":  # the natural prediction: cut where greedy decoding would have stopped
            new = [row[: n - 1 if steps.natural_stop[i] is not None else n] for i, (row, n) in
                   enumerate(zip(new.tolist(), lengths, strict=True))]  # fmt: skip
        texts = [t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True)]
        predictions.update(zip(idx, texts, strict=True))
        if on_batch is not None:
            on_batch(idx, texts)
    return predictions


def _returned_cache(out) -> object:
    """The KV cache generate() returned: ``out.cache`` from transformers 5.24, ``past_key_values`` before."""
    cache = getattr(out, "cache", None)
    return cache if cache is not None else getattr(out, "past_key_values", None)


class _FiniteCheck:
    """Logits processor raising on NaN/inf logits, which would otherwise decode into silent garbage."""

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        broken = torch.isnan(scores) | torch.isposinf(scores)  # -inf is how processors mask tokens
        if broken.any():
            bad = broken.any(dim=-1).nonzero().flatten().tolist()
            raise NonFiniteLogitsError(
                f"non-finite (NaN/inf) logits at generation step {input_ids.shape[1]} in batch rows {bad}: "
                "the checkpoint is broken or the dtype overflows; try dtype=float32"
            )
        return scores
