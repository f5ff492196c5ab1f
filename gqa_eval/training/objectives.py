"""Uptraining objectives, data side: the collators and the loss that turn a token stream into training
batches for Hugging Face's ``Trainer``.

Uptraining a converted GQA checkpoint (Ainslie et al. 2023, arXiv 2305.13245, sec. 2.1) continues the
checkpoint's *pre-training* objective for a small fraction of its original steps. For T5 that is span
corruption (Raffel et al. 2020, arXiv 1910.10683, sec. 3.1.4), implemented here as T5's
``random_spans_noise_mask`` and nanoT5's / HF's ``DataCollatorForT5MLM`` do it, but with a seeded
``numpy.random.Generator`` instead of the global RNG so that a batch is a function of its seed. For a
decoder-only model it is causal language modelling; :func:`distill_loss` adds distillation from the
unconverted (MHA) teacher. :data:`OBJECTIVES` names them; :func:`check_objective` refuses a mismatch
between an objective and the model's kind before any data is read.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

OBJECTIVES = ("span_corruption", "causal_lm", "distill", "task_mixture")
IGNORE_INDEX = -100  # the label value transformers' losses skip

_SENTINEL_FIX = (
    "use a T5 tokenizer (it has <extra_id_0>..<extra_id_99>), or let gqa-eval-train add them with "
    "span_corruption.add_sentinels=true, or add them yourself, highest id first: "
    "tokenizer.add_tokens([f'<extra_id_{i}>' for i in reversed(range(100))], special_tokens=True) "
    "and model.resize_token_embeddings(len(tokenizer))"
)


def check_objective(name: str, encoder_decoder: bool) -> None:
    """Raise ``ValueError`` (one line, naming the fix) for an unknown objective or one that does not fit
    the model: span corruption trains an encoder-decoder, causal LM a decoder-only model."""
    if name not in OBJECTIVES:
        raise ValueError(f"unknown objective {name!r}; choose one of {', '.join(OBJECTIVES)}")
    if name == "span_corruption" and not encoder_decoder:
        raise ValueError(
            "objective span_corruption needs an encoder-decoder (T5-style) model; "
            "for a decoder-only model use objective=causal_lm"
        )
    if name == "causal_lm" and encoder_decoder:
        raise ValueError(
            "objective causal_lm trains a decoder-only model; "
            "for an encoder-decoder model use objective=span_corruption"
        )


# --------------------------------------------------------------------------------------------------
# Span corruption (T5)
# --------------------------------------------------------------------------------------------------


def _span_counts(length: int, noise_density: float, mean_span: float) -> tuple[int, int]:
    """(noise tokens, noise spans) of a sequence of ``length`` tokens, as T5 fixes them (deterministic:
    only *where* the spans fall is random)."""
    num_noise = int(round(length * noise_density))
    num_noise = min(max(num_noise, 1), length - 1)  # at least one noise and one kept token
    num_spans = int(round(min(num_noise, length - num_noise) / mean_span))
    return num_noise, max(num_spans, 1)


def compute_input_and_target_lengths(
    input_length: int, noise_density: float = 0.15, mean_span: float = 3.0
) -> tuple[int, int]:
    """The raw length to cut blocks at, and the target length, so that the corrupted input is exactly
    ``input_length`` tokens (T5's ``random_spans_helper``).

    The input keeps the non-noise tokens, one sentinel per span and an EOS; the target holds the noise
    tokens, one sentinel per span and an EOS. The raw length is the largest one whose input still fits.
    """

    def lengths(tokens: int) -> tuple[int, int]:
        num_noise = int(round(tokens * noise_density))
        num_spans = int(round(num_noise / mean_span))
        return tokens - num_noise + num_spans + 1, num_noise + num_spans + 1

    tokens = input_length
    while lengths(tokens + 1)[0] <= input_length:
        tokens += 1
    _, target_length = lengths(tokens)
    # T5's own adjustment: at density 0.5 keep the target no longer than the (round-numbered) input
    if noise_density == 0.5 and target_length > input_length:
        tokens -= 1
        target_length -= 1
    return tokens, target_length


def _random_segmentation(rng: np.random.Generator, num_items: int, num_segments: int) -> np.ndarray:
    """``num_segments`` positive lengths summing to ``num_items``, every such split equally likely."""
    first_in_segment = np.arange(num_items - 1) < (num_segments - 1)
    rng.shuffle(first_in_segment)
    segment_id = np.cumsum(np.pad(first_in_segment, (1, 0)))
    return np.bincount(segment_id, minlength=num_segments)


def random_spans_noise_mask(
    length: int, rng: np.random.Generator, noise_density: float = 0.15, mean_span: float = 3.0
) -> np.ndarray:
    """A boolean mask (True = noise) of ``length`` tokens: spans alternate kept / noise, starting with a
    kept span, with T5's deterministic counts and uniformly random span lengths."""
    num_noise, num_spans = _span_counts(length, noise_density, mean_span)
    noise_lengths = _random_segmentation(rng, num_noise, num_spans)
    kept_lengths = _random_segmentation(rng, length - num_noise, num_spans)
    interleaved = np.stack([kept_lengths, noise_lengths], axis=1).reshape(-1)  # kept, noise, kept, ...
    span_start = np.zeros(length, dtype=np.int64)
    span_start[np.cumsum(interleaved)[:-1]] = 1
    return np.cumsum(span_start) % 2 == 1


def sentinel_ids(tokenizer: Any, count: int) -> list[int]:
    """The ids of ``<extra_id_0>`` .. ``<extra_id_{count-1}>``, which T5 numbers downwards from the top
    of the vocabulary (sentinel k is id(<extra_id_0>) - k); raises with the fix if the tokenizer lacks
    them or numbers them otherwise."""
    unk = getattr(tokenizer, "unk_token_id", None)
    first = tokenizer.convert_tokens_to_ids("<extra_id_0>")
    if first is None or first == unk:
        raise ValueError(
            f"span_corruption: the tokenizer has no sentinel token <extra_id_0>; {_SENTINEL_FIX}"
        )
    last = tokenizer.convert_tokens_to_ids(f"<extra_id_{count - 1}>")
    if last != first - (count - 1):
        raise ValueError(
            f"span_corruption needs {count} sentinels <extra_id_0>..<extra_id_{count - 1}> numbered down "
            f"from id {first}, but <extra_id_{count - 1}> is id {last}; {_SENTINEL_FIX}"
        )
    return [first - k for k in range(count)]


def corrupt(
    ids: Sequence[int], noise_mask: np.ndarray, first_sentinel: int, eos_id: int
) -> tuple[list[int], list[int]]:
    """Apply a noise mask: each noise span becomes one sentinel in the input, and the target lists each
    span's tokens after its sentinel; both end in EOS. Sentinel k is ``first_sentinel - k``."""
    inputs: list[int] = []
    targets: list[int] = []
    span = -1
    for i, (token, noise) in enumerate(zip(ids, noise_mask.tolist(), strict=True)):
        starts_span = bool(noise) and (i == 0 or not noise_mask[i - 1])
        if starts_span:
            span += 1
        if noise:
            if starts_span:
                inputs.append(first_sentinel - span)
                targets.append(first_sentinel - span)
            targets.append(token)
        else:
            inputs.append(token)
    return inputs + [eos_id], targets + [eos_id]


def _ids_of(feature: Any) -> list[int]:
    """A feature as token ids: a sequence of ids, or a dict with ``input_ids`` (a dataset row)."""
    ids = feature["input_ids"] if isinstance(feature, dict) else feature
    return [int(i) for i in ids]


def _pad(rows: list[list[int]], value: int, length: int | None = None) -> torch.Tensor:
    """Right-pad ``rows`` to ``length`` (default: the longest) with ``value``; (B, T) int64."""
    length = max(len(r) for r in rows) if length is None else length
    return torch.tensor([r + [value] * (length - len(r)) for r in rows], dtype=torch.long)


class SpanCorruptionCollator:
    """T5 span corruption as a ``Trainer`` data collator.

    Features are token-id sequences of :attr:`expanded_length` (from :func:`packed_blocks`); each gets
    its own noise mask and becomes exactly ``input_length`` input tokens and :attr:`target_length`
    labels. A shorter sequence (a corpus's last block) is corrupted at its own length and padded:
    inputs with the pad id (attention mask 0), labels with -100. The model builds ``decoder_input_ids``
    from the labels itself (shift right, -100 -> pad). Masks come from ``numpy.random.default_rng(seed)``,
    so the same seed and the same calls give the same batches.
    """

    def __init__(
        self,
        tokenizer: Any,
        input_length: int,
        noise_density: float = 0.15,
        mean_span: float = 3.0,
        seed: int = 0,
    ) -> None:
        if not 0.0 < noise_density < 1.0:
            raise ValueError(f"noise_density={noise_density} must be in (0, 1); T5 uses 0.15")
        if mean_span < 1.0:
            raise ValueError(f"mean_span={mean_span} must be at least 1; T5 uses 3.0")
        self.input_length = input_length
        self.noise_density = noise_density
        self.mean_span = mean_span
        self.expanded_length, self.target_length = compute_input_and_target_lengths(
            input_length, noise_density, mean_span
        )
        self.first_sentinel = sentinel_ids(tokenizer, self._check_lengths())[0]
        self.eos_id = tokenizer.eos_token_id
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_id
        self.rng = np.random.default_rng(seed)

    def _check_lengths(self) -> int:
        """Check that every sequence length up to :attr:`expanded_length` corrupts into at most
        ``input_length`` inputs and :attr:`target_length` labels (T5's at-least-one-span rule breaks this
        for very short inputs); returns the most spans any of them has, the sentinels needed."""
        max_spans = 0
        for n in range(2, self.expanded_length + 1):
            noise, spans = _span_counts(n, self.noise_density, self.mean_span)
            if n - noise + spans + 1 > self.input_length or noise + spans + 1 > self.target_length:
                max_spans = 0
                break
            max_spans = max(max_spans, spans)
        if max_spans == 0:
            raise ValueError(
                f"span_corruption: input_length={self.input_length} is too short to corrupt at "
                f"noise_density={self.noise_density}, mean_span={self.mean_span}; use a longer input_length"
            )
        return max_spans

    def __call__(self, features: Sequence[Any]) -> dict[str, torch.Tensor]:
        inputs, labels = [], []
        for feature in features:
            ids = _ids_of(feature)
            if not 2 <= len(ids) <= self.expanded_length:
                raise ValueError(
                    f"span_corruption got {len(ids)} tokens; it needs 2..{self.expanded_length} "
                    f"(cut the corpus with packed_blocks(tokens, {self.expanded_length}))"
                )
            mask = random_spans_noise_mask(len(ids), self.rng, self.noise_density, self.mean_span)
            source, target = corrupt(ids, mask, self.first_sentinel, self.eos_id)
            inputs.append(source)
            labels.append(target)
        input_ids = _pad(inputs, self.pad_id, self.input_length)
        attention_mask = _pad([[1] * len(r) for r in inputs], 0, self.input_length)
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "labels": _pad(labels, IGNORE_INDEX, self.target_length),
        }


def packed_blocks(token_stream: Iterable[Sequence[int]], length: int, eos_id: int) -> Iterator[list[int]]:
    """Concatenate documents (token-id lists, each followed by ``eos_id``) and cut blocks of exactly
    ``length`` tokens, so no compute goes to padding; a block may span documents, and the tail shorter
    than ``length`` is dropped (as HF's ``group_texts`` does)."""
    if length < 2:
        raise ValueError(f"packed_blocks: length={length} must be at least 2")
    buffer: list[int] = []
    for doc in token_stream:
        buffer.extend(doc)
        buffer.append(eos_id)
        while len(buffer) >= length:
            yield buffer[:length]
            del buffer[:length]


# --------------------------------------------------------------------------------------------------
# Causal LM and distillation
# --------------------------------------------------------------------------------------------------


def causal_lm(
    features: Sequence[Any], pad_id: int, block_length: int | None = None
) -> dict[str, torch.Tensor]:
    """A causal-LM batch: sequences right-padded to ``block_length`` (default: the longest), and labels
    equal to the inputs with -100 on padding. No shift here: transformers' causal LMs shift inside.
    Labels are masked by position, not by id, because in packed blocks the pad id may be EOS, a real
    token."""
    rows = [_ids_of(f) for f in features]
    longest = max(len(r) for r in rows)
    if block_length is not None and longest > block_length:
        raise ValueError(
            f"causal_lm got a sequence of {longest} tokens, longer than block_length={block_length}; "
            f"cut the corpus with packed_blocks(tokens, {block_length})"
        )
    input_ids = _pad(rows, pad_id, block_length)
    attention_mask = _pad([[1] * len(r) for r in rows], 0, block_length)
    labels = input_ids.masked_fill(attention_mask == 0, IGNORE_INDEX)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


class CausalLMCollator:
    """:func:`causal_lm` as a ``Trainer`` data collator; pads with the tokenizer's pad id, or EOS for
    tokenizers without one (Llama's): padded positions are masked out of attention and loss anyway."""

    def __init__(self, tokenizer: Any, block_length: int | None = None) -> None:
        pad = tokenizer.pad_token_id
        self.pad_id = tokenizer.eos_token_id if pad is None else pad
        self.block_length = block_length

    def __call__(self, features: Sequence[Any]) -> dict[str, torch.Tensor]:
        return causal_lm(features, self.pad_id, self.block_length)


def distill_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    temperature: float = 1.0,
    lm_weight: float = 0.0,
) -> torch.Tensor:
    """Token-level distillation (Hinton et al. 2015, arXiv 1503.02531): KL(teacher || student) of the
    temperature-softened distributions, averaged over positions whose label is not -100 and scaled by
    T^2 (so gradients keep their size as T changes), plus ``lm_weight`` x cross-entropy on the labels.

    Logits are (B, T, V) and aligned with ``labels`` (B, T): position t's logits predict ``labels[t]``.
    For a decoder-only model pass ``logits[:, :-1]`` and ``labels[:, 1:]``. The teacher is detached, so
    only the student gets gradients. Computed in float32, whatever the logits' dtype.
    """
    if temperature <= 0:
        raise ValueError(f"distill_loss: temperature={temperature} must be positive")
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"distill_loss: student logits {tuple(student_logits.shape)} and teacher logits "
            f"{tuple(teacher_logits.shape)} differ; both models must share the tokenizer and positions"
        )
    keep = labels != IGNORE_INDEX  # (B, T)
    student = student_logits.float()[keep] / temperature  # (N, V)
    teacher = teacher_logits.detach().float()[keep] / temperature
    kl = F.kl_div(F.log_softmax(student, -1), F.log_softmax(teacher, -1), log_target=True, reduction="sum")
    loss = kl / keep.sum().clamp(min=1) * temperature**2
    if lm_weight:
        ce = F.cross_entropy(
            student_logits.float().flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX
        )
        loss = loss + lm_weight * ce
    return loss
