"""Generation stage: batched greedy decoding over length-sorted batches, results handed out per batch.

Examples are sorted by input length (longest first, so an out-of-memory batch shows at once and batches
carry little padding). Each batch is greedy-decoded (``do_sample=False, num_beams=1``, as the paper) to
the task's output length, timed by ``timing.Timer``, and passed to ``on_batch`` as soon as it is done, so
the caller can stream it to disk. One untimed warm-up call runs first.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from tqdm.auto import tqdm

from gqa_eval.timing import Timer


def _pad(batch: Sequence[Sequence[int]], pad_id: int, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(ids) for ids in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, ids in enumerate(batch):
        cols = slice(width - len(ids), width) if left else slice(0, len(ids))
        input_ids[i, cols] = torch.tensor(ids, dtype=torch.long)
        mask[i, cols] = 1
    return input_ids, mask


def _new_token_counts(new: torch.Tensor, eos_ids: set[int]) -> list[int]:
    """Tokens generated per row, up to and including the first EOS."""
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
        tokenizer: its tokenizer (for pad/EOS ids and decoding).
        inputs: token ids per example.
        max_new_tokens: the task's output length.
        batch_size: examples per ``generate`` call.
        timer: records the wall time of each batch.
        on_batch: called with (example indices, predictions) after each batch.
        skip: indices not to generate (already predicted).
        progress: show a progress bar.
        description: progress bar label.

    Returns:
        Prediction text by example index.
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
    gen_kwargs = {"do_sample": False, "num_beams": 1, "pad_token_id": pad_id}

    def run(idx: list[int], new_tokens: int) -> torch.Tensor:
        input_ids, mask = _pad([inputs[i] for i in idx], pad_id, left=decoder_only)
        with torch.inference_mode():
            out = model.generate(
                input_ids=input_ids.to(device),
                attention_mask=mask.to(device),
                max_new_tokens=new_tokens,
                **gen_kwargs,
            )
        # seq2seq output starts with the decoder start token; decoder-only repeats the prompt.
        return out[:, input_ids.shape[1] :] if decoder_only else out[:, 1:]

    if batches:
        run(batches[0], min(4, max_new_tokens))  # warm-up: allocator, kernels, caches; not timed
    predictions: dict[int, str] = {}
    for idx in tqdm(batches, desc=description, unit="batch", disable=not progress):
        with timer.batch(len(idx)) as record:
            new = run(idx, max_new_tokens)
        record.new_tokens = sum(_new_token_counts(new, eos_ids))
        texts = [t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True)]
        predictions.update(zip(idx, texts, strict=True))
        if on_batch is not None:
            on_batch(idx, texts)
    return predictions
