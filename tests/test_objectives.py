"""The uptraining objectives' data side: T5 span corruption (hand-worked masks, T5's length arithmetic,
mask statistics, determinism), packing, the causal-LM collator, the distillation loss and the
objective/model check."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import TINY_T5, make_decoder
from transformers import AutoTokenizer, T5Config, T5ForConditionalGeneration

from gqa_eval.training import objectives
from gqa_eval.training.objectives import (
    OBJECTIVES,
    CausalLMCollator,
    SpanCorruptionCollator,
    causal_lm,
    check_objective,
    compute_input_and_target_lengths,
    corrupt,
    distill_loss,
    packed_blocks,
    random_spans_noise_mask,
)

N_SENTINELS = 100


@pytest.fixture(scope="module")
def t5_sentinel_tokenizer():
    """The bundled tokenizer plus T5's 100 sentinels, added highest first so that <extra_id_0> is the top
    id and <extra_id_k> = id(<extra_id_0>) - k, as in T5's own vocabulary."""
    tok = AutoTokenizer.from_pretrained(TINY_T5)
    tok.add_tokens([f"<extra_id_{i}>" for i in reversed(range(N_SENTINELS))], special_tokens=True)
    return tok


def _first_sentinel(tok) -> int:
    return tok.convert_tokens_to_ids("<extra_id_0>")


def _uncorrupt(inputs: list[int], targets: list[int], first_sentinel: int) -> list[int]:
    """Undo span corruption: put each target span back where its sentinel stands in the input."""
    sentinels = set(range(first_sentinel - N_SENTINELS + 1, first_sentinel + 1))
    spans: dict[int, list[int]] = {}
    current = None
    for token in targets[:-1]:  # the last target token is EOS
        if token in sentinels:
            current = token
            spans[current] = []
        else:
            spans[current].append(token)
    out: list[int] = []
    for token in inputs[:-1]:
        out.extend(spans[token] if token in sentinels else [token])
    return out


# --------------------------------------------------------------------------------------------------
# span corruption
# --------------------------------------------------------------------------------------------------


def test_corrupt_hand_worked_examples():
    """Fixed masks, expected lists written out by hand: a span becomes one sentinel (counting down from
    <extra_id_0>) in the input; the target is each sentinel followed by its span; both end in EOS."""
    s0, eos = 99, 1
    ids = [10, 11, 12, 13, 14, 15, 16, 17, 18, 19]
    mask = np.array([0, 0, 1, 1, 0, 0, 0, 1, 0, 0], dtype=bool)
    assert corrupt(ids, mask, s0, eos) == ([10, 11, 99, 14, 15, 16, 98, 18, 19, 1], [99, 12, 13, 98, 17, 1])
    # a span at the very start and one at the very end
    ids = [5, 6, 7, 8, 9]
    mask = np.array([1, 0, 0, 1, 1], dtype=bool)
    assert corrupt(ids, mask, s0, eos) == ([99, 6, 7, 98, 1], [99, 5, 98, 8, 9, 1])


def test_collator_applies_the_mask_with_the_tokenizers_sentinels(t5_sentinel_tokenizer, monkeypatch):
    """The collator with a fixed mask: exact inputs and labels, sentinel ids from <extra_id_k>, a short
    row padded (pad id / attention 0 / labels -100)."""
    tok = t5_sentinel_tokenizer
    collator = SpanCorruptionCollator(tok, input_length=10)
    s0, s1 = tok.convert_tokens_to_ids("<extra_id_0>"), tok.convert_tokens_to_ids("<extra_id_1>")
    assert s1 == s0 - 1  # the fixture's premise, T5's numbering
    masks = {
        10: np.array([0, 0, 1, 1, 0, 0, 0, 0, 0, 0], dtype=bool),
        4: np.array([0, 1, 0, 0], dtype=bool),
    }
    monkeypatch.setattr(objectives, "random_spans_noise_mask", lambda n, rng, d, m: masks[n])
    batch = collator([list(range(20, 30)), {"input_ids": [40, 41, 42, 43]}])
    eos, pad = tok.eos_token_id, tok.pad_token_id
    assert batch["input_ids"].tolist() == [
        [20, 21, s0, 24, 25, 26, 27, 28, 29, eos],
        [40, s0, 42, 43, eos, pad, pad, pad, pad, pad],
    ]
    assert batch["attention_mask"].tolist() == [[1] * 10, [1] * 5 + [0] * 5]
    assert batch["labels"].tolist() == [[s0, 22, 23, eos], [s0, 41, eos, -100]]
    assert s1 not in batch["input_ids"]


def test_lengths_match_t5_reference():
    """T5's random_spans_helper at inputs_length=512 (density 0.15, mean span 3) gives 568 raw tokens and
    114 targets, the numbers nanoT5 and HF's run_t5_mlm_flax.py use."""
    assert compute_input_and_target_lengths(512, 0.15, 3.0) == (568, 114)


@pytest.mark.parametrize("input_length", [16, 64, 512])
def test_input_length_after_corruption(t5_sentinel_tokenizer, input_length):
    """Full-length rows corrupt to exactly ``input_length`` inputs and ``target_length`` labels, with
    no padding, and input + target put back together give the original row."""
    tok = t5_sentinel_tokenizer
    collator = SpanCorruptionCollator(tok, input_length=input_length, seed=3)
    rng = np.random.default_rng(0)
    rows = [rng.integers(3, 3000, collator.expanded_length).tolist() for _ in range(4)]
    batch = collator(rows)
    assert batch["input_ids"].shape == (4, input_length)
    assert batch["labels"].shape == (4, collator.target_length)
    assert bool(batch["attention_mask"].all()) and not bool((batch["labels"] == -100).any())
    for row, inputs, labels in zip(rows, batch["input_ids"].tolist(), batch["labels"].tolist(), strict=True):
        assert _uncorrupt(inputs, labels, _first_sentinel(tok)) == row


def test_noise_mask_statistics():
    """Over many draws the noise density and the mean noise-span length are T5's (tolerances: 0.005 on
    density, 0.1 on mean span), spans vary in length, the mask starts with a kept token, and noise falls
    as often in the first half of the sequence as in the second (within 0.01)."""
    rng = np.random.default_rng(0)
    length, draws = 568, 2000
    masks = np.stack([random_spans_noise_mask(length, rng, 0.15, 3.0) for _ in range(draws)])
    assert abs(masks.mean() - 0.15) < 0.005
    starts = masks & ~np.pad(masks, ((0, 0), (1, 0)))[:, :-1]  # (draws, length): first token of a span
    span_lengths = masks.sum() / starts.sum()
    assert abs(span_lengths - 3.0) < 0.1
    assert not masks[:, 0].any()
    first, second = masks[:, : length // 2].mean(), masks[:, length // 2 :].mean()
    assert abs(first - second) < 0.01
    # lengths of individual spans are random, not all mean_span
    one_mask = masks[0]
    runs = np.diff(np.flatnonzero(np.diff(np.r_[0, one_mask.astype(int), 0])))[::2]
    assert len(set(runs.tolist())) > 1


def test_span_corruption_is_deterministic_per_seed(t5_sentinel_tokenizer):
    tok = t5_sentinel_tokenizer
    rows = [list(range(100, 100 + SpanCorruptionCollator(tok, 64).expanded_length))] * 3

    def batches(seed):
        collator = SpanCorruptionCollator(tok, 64, seed=seed)
        return [collator(rows)["input_ids"] for _ in range(2)]

    a, b, c = batches(7), batches(7), batches(8)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a[0], c[0])
    assert not torch.equal(a[0], a[1])  # successive batches draw new masks


def test_missing_sentinels_raise_with_the_fix():
    tok = AutoTokenizer.from_pretrained(TINY_T5)  # the bundled tokenizer has no <extra_id_k>
    with pytest.raises(ValueError, match=r"no sentinel token <extra_id_0>.*add_tokens"):
        SpanCorruptionCollator(tok, input_length=64)
    tok.add_tokens(["<extra_id_1>", "<extra_id_0>"], special_tokens=True)  # too few for 64 tokens
    with pytest.raises(ValueError, match=r"needs \d+ sentinels"):
        SpanCorruptionCollator(tok, input_length=64)


def test_too_short_inputs_and_rows_raise(t5_sentinel_tokenizer):
    for input_length in (1, 8):
        with pytest.raises(ValueError, match=f"input_length={input_length} is too short"):
            SpanCorruptionCollator(t5_sentinel_tokenizer, input_length=input_length)
    collator = SpanCorruptionCollator(t5_sentinel_tokenizer, input_length=16)
    with pytest.raises(ValueError, match=r"packed_blocks\(tokens, 17\)"):
        collator([list(range(3, 3 + collator.expanded_length + 1))])


def test_span_corruption_batch_trains_a_t5(t5_sentinel_tokenizer):
    """The collator's batch is what T5ForConditionalGeneration takes: it builds decoder inputs from the
    -100-padded labels, and the loss gives gradients."""
    tok = t5_sentinel_tokenizer
    config = T5Config(
        vocab_size=len(tok), d_model=16, d_kv=4, d_ff=32, num_layers=1, num_decoder_layers=1, num_heads=4,
        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, decoder_start_token_id=tok.pad_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(config)
    collator = SpanCorruptionCollator(tok, input_length=16)
    docs = [list(range(10, 30)), list(range(40, 47))]
    batch = collator(list(packed_blocks(docs, collator.expanded_length, tok.eos_token_id)) + [[5, 6, 7]])
    loss = model(**batch).loss
    loss.backward()
    assert torch.isfinite(loss) and model.shared.weight.grad.abs().sum() > 0


def test_packed_blocks_hand_worked():
    docs = [[1, 2, 3], [4, 5], [6, 7, 8, 9]]
    assert list(packed_blocks(docs, 4, eos_id=0)) == [[1, 2, 3, 0], [4, 5, 0, 6], [7, 8, 9, 0]]
    assert list(packed_blocks(docs, 5, eos_id=0)) == [[1, 2, 3, 0, 4], [5, 0, 6, 7, 8]]  # tail dropped


# --------------------------------------------------------------------------------------------------
# causal LM
# --------------------------------------------------------------------------------------------------


def test_causal_lm_labels_mask_padding_by_position():
    """Labels are the inputs with -100 on padding only; with pad id == EOS (no pad token), a real EOS
    inside a row keeps its label."""
    eos = 1
    batch = causal_lm([[5, 6, eos, 7], {"input_ids": [8, eos]}], pad_id=eos, block_length=5)
    assert batch["input_ids"].tolist() == [[5, 6, eos, 7, eos], [8, eos, eos, eos, eos]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 0], [1, 1, 0, 0, 0]]
    assert batch["labels"].tolist() == [[5, 6, eos, 7, -100], [8, eos, -100, -100, -100]]
    with pytest.raises(ValueError, match=r"longer than block_length=3.*packed_blocks"):
        causal_lm([[5, 6, 7, 8]], pad_id=0, block_length=3)


def test_causal_lm_padding_leaves_the_loss_unchanged():
    """A decoder's loss on a padded causal_lm batch equals its loss on the unpadded row: transformers
    shifts the labels itself and skips the -100s."""
    model = make_decoder("llama")
    tok = type("Tok", (), {"pad_token_id": None, "eos_token_id": 1})()  # Llama-like: no pad token
    row = [5, 9, 13, 1, 22, 31]
    padded = CausalLMCollator(tok, block_length=len(row) + 3)([row])
    assert padded["input_ids"].shape[1] == len(row) + 3
    with torch.no_grad():
        got = model(**padded).loss
        want = model(input_ids=torch.tensor([row]), labels=torch.tensor([row])).loss
    torch.testing.assert_close(got, want)


# --------------------------------------------------------------------------------------------------
# distillation
# --------------------------------------------------------------------------------------------------


def _logits(seed: int, shape=(2, 5, 11)) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def _labels() -> torch.Tensor:
    return torch.tensor([[3, 4, 5, -100, -100], [1, 2, 3, 4, -100]])


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_distill_loss_zero_for_equal_logits_and_kl_otherwise(temperature):
    student, teacher, labels = _logits(0), _logits(1), _labels()
    assert distill_loss(teacher.clone(), teacher, labels, temperature).abs() < 1e-6
    keep = labels != -100
    reference = (
        torch.distributions.kl_divergence(  # KL(teacher || student), the teacher's direction
            torch.distributions.Categorical(logits=teacher[keep] / temperature),
            torch.distributions.Categorical(logits=student[keep] / temperature),
        ).mean()
        * temperature**2
    )
    got = distill_loss(student, teacher, labels, temperature)
    assert got > 0
    torch.testing.assert_close(got, reference)


def test_distill_loss_ignores_masked_positions_and_adds_weighted_ce():
    student, teacher, labels = _logits(0), _logits(1), _labels()
    changed = student.clone()
    changed[labels == -100] += 5 * _logits(2)[labels == -100]
    torch.testing.assert_close(distill_loss(changed, teacher, labels), distill_loss(student, teacher, labels))
    ce = torch.nn.functional.cross_entropy(student.flatten(0, 1), labels.flatten(), ignore_index=-100)
    torch.testing.assert_close(distill_loss(student, student, labels, lm_weight=0.5), 0.5 * ce)


def test_distill_loss_gradient_reaches_the_student_only():
    student = _logits(0).requires_grad_()
    teacher = _logits(1).requires_grad_()
    distill_loss(student, teacher, _labels(), temperature=2.0).backward()
    assert teacher.grad is None
    assert student.grad is not None and student.grad[_labels() != -100].abs().sum() > 0
    assert student.grad[_labels() == -100].abs().sum() == 0


def test_distill_loss_rejects_mismatched_logits():
    with pytest.raises(ValueError, match="differ"):
        distill_loss(_logits(0), _logits(1, (2, 5, 12)), _labels())


# --------------------------------------------------------------------------------------------------
# objective names
# --------------------------------------------------------------------------------------------------


def test_check_objective():
    for name in ("distill", "task_mixture"):
        check_objective(name, encoder_decoder=True)
        check_objective(name, encoder_decoder=False)
    check_objective("span_corruption", encoder_decoder=True)
    check_objective("causal_lm", encoder_decoder=False)
    with pytest.raises(ValueError, match="unknown objective 'mlm'; choose one of " + ", ".join(OBJECTIVES)):
        check_objective("mlm", encoder_decoder=True)
    with pytest.raises(ValueError, match="decoder-only model use objective=causal_lm"):
        check_objective("span_corruption", encoder_decoder=False)
    with pytest.raises(ValueError, match="encoder-decoder model use objective=span_corruption"):
        check_objective("causal_lm", encoder_decoder=True)
