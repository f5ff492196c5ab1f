"""The timed region holds the model's work: the timed generate() call synchronises with the host no more
often than a bare ``model.generate`` on the same batch, in both timing modes; finiteness is checked once
per batch, after it, and still catches a broken model."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from conftest import make_decoder, make_t5, seqs

from gqa_eval.generation import NonFiniteLogitsError, generate
from gqa_eval.timing import Timer
from gqa_eval.variant.conversion import convert_to_gqa

# Tensor methods that make the host wait for the device (or copy to it).
SYNCS = ("item", "tolist", "__bool__", "cpu", "numpy", "__int__", "__float__", "__index__")


def _counting(monkeypatch, fn) -> tuple[object, Counter]:
    """Run ``fn()`` counting calls of the synchronising tensor methods."""
    counts: Counter = Counter()
    with monkeypatch.context() as m:
        for name in SYNCS:
            original = getattr(torch.Tensor, name)

            def wrapped(self, *args, _name=name, _original=original, **kwargs):
                counts[_name] += 1
                return _original(self, *args, **kwargs)

            m.setattr(torch.Tensor, name, wrapped)
        out = fn()
    return out, counts


@pytest.mark.parametrize("mode", ["natural", "fixed"])
@pytest.mark.parametrize("arch", ["t5", "llama"])
def test_timed_generate_syncs_no_more_than_bare_generate(monkeypatch, tokenizer, mode, arch):
    model = convert_to_gqa(make_t5(seed=4) if arch == "t5" else make_decoder("llama", seed=4), 2)
    real = model.generate
    timed_calls: list[tuple[dict, Counter]] = []

    def spy(**kwargs):
        out, counts = _counting(monkeypatch, lambda: real(**kwargs))
        timed_calls.append((kwargs, counts))
        return out

    monkeypatch.setattr(model, "generate", spy)
    timer = Timer(mode=mode)
    stops = ["e"]  # a stop string the tiny tokenizer's pieces contain: the stopping criteria are exercised
    generate(model, tokenizer, seqs(4, 12), max_new_tokens=10, batch_size=2, timer=timer, progress=False,
             stop_strings=stops)  # fmt: skip
    assert len(timed_calls) == 3  # the warm-up call and two timed batches
    for kwargs, counts in timed_calls[1:]:
        bare = {
            "input_ids": kwargs["input_ids"], "attention_mask": kwargs["attention_mask"],
            "max_new_tokens": kwargs["max_new_tokens"], "do_sample": False, "num_beams": 1,
            "pad_token_id": kwargs["pad_token_id"], "return_dict_in_generate": True,
        }  # fmt: skip
        if mode == "fixed":  # the same work: every row decodes max_new_tokens
            bare["min_new_tokens"] = kwargs["max_new_tokens"]
        else:
            bare.update(stop_strings=stops, tokenizer=tokenizer)
        bare_out, bare_counts = _counting(monkeypatch, lambda b=bare: real(**b))
        assert sum(counts.values()) <= sum(bare_counts.values()), (counts, bare_counts)
        assert bare_out.sequences.shape[1] > kwargs["input_ids"].shape[1] + 2 or arch == "t5"


def test_non_finite_model_is_caught_after_the_batch(tokenizer):
    model = make_t5(seed=5)
    with torch.no_grad():
        model.decoder.block[1].layer[0].SelfAttention.v.weight[0, 0] = float("nan")
    with pytest.raises(NonFiniteLogitsError, match=r"non-finite .* examples \[\d"):
        generate(model, tokenizer, seqs(2, 8), max_new_tokens=4, batch_size=2, timer=Timer(), progress=False)


def test_non_finite_lm_head_is_caught(tokenizer):
    model = make_decoder("llama", seed=5)
    with torch.no_grad():
        model.lm_head.weight[7] = float("inf")
    with pytest.raises(NonFiniteLogitsError):
        generate(model, tokenizer, seqs(2, 8), max_new_tokens=4, batch_size=2, timer=Timer(), progress=False)
