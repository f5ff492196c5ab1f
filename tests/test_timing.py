"""Timing: timer logic on a fake clock, prefill + decode accounting on a real tiny model, KV bytes from
the cache against the formula, fixed-work mode, the roofline floor, and CUDA paths where a GPU exists."""

from __future__ import annotations

import pytest
import torch
from conftest import make_decoder, make_t5, seqs

from gqa_eval import roofline
from gqa_eval.generation import generate
from gqa_eval.timing import Timer
from gqa_eval.variant.conversion import convert_to_gqa


class FakeClock:
    def __init__(self, times):
        self.times = list(times)

    def __call__(self):
        return self.times.pop(0)


def test_timer_on_fake_clock():
    timer = Timer(clock=FakeClock([0.0, 1.0, 1.5, 2.5, 3.0, 10.0, 10.5, 11.0, 11.25, 12.0]))
    scores = torch.zeros(2, 5)
    for samples, n_steps in ((2, 3), (4, 3)):
        steps = timer.step_clock({1})
        with timer.batch(samples, steps) as record:
            for _ in range(n_steps):
                steps(torch.zeros(samples, 1, dtype=torch.long), scores[:1].expand(samples, 5))
        record.new_tokens = samples * n_steps
    first, second = timer.batches
    assert (first.seconds, first.prefill, first.steps) == (3.0, 1.0, [0.5, 1.0])
    assert (second.seconds, second.prefill, second.steps) == (2.0, 0.5, [0.5, 0.25])
    s = timer.summary()
    assert s["time_per_sample_s"] == pytest.approx(5.0 / 6)
    assert s["tokens_per_s"] == pytest.approx(18 / 5.0)
    assert s["prefill_s_per_sample"] == pytest.approx(1.5 / 6)
    assert s["decode_s_per_token"] == pytest.approx(0.5)  # median of 0.5, 1.0, 0.5, 0.25
    assert s["batch_time_per_sample_median_s"] == pytest.approx((1.5 + 0.5) / 2)
    assert (s["decode_step_min_s"], s["decode_step_max_s"]) == (0.25, 1.0)
    assert s["accounted_fraction"] == pytest.approx((1.0 + 1.5 + 0.5 + 0.75) / 5.0)


def test_repeated_passes_keep_the_median_pass():
    timer = Timer(clock=FakeClock([0.0, 2.0, 10.0, 11.0, 20.0, 21.5]), repeats=3)
    for _ in range(3):
        with timer.batch(4):
            pass
    kept = timer.keep_median(3)
    assert kept.seconds == 1.5 and len(timer.batches) == 1  # passes of 2.0, 1.0, 1.5 s
    assert timer.summary()["pass_spread_median"] == pytest.approx(1.0) and timer.summary()["repeats"] == 3
    with pytest.raises(ValueError, match="cannot merge 2 passes"):
        timer.keep_median(2)
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="timing.repeats must be a whole number"):
            Timer(repeats=bad)


def test_fixed_mode_suppresses_eos_and_records_natural_stop():
    timer = Timer(mode="fixed", clock=FakeClock([0.0, 1.0, 2.0, 3.0, 4.0]))
    steps = timer.step_clock({1})
    with timer.batch(2, steps):
        first = steps(torch.zeros(2, 1, dtype=torch.long), torch.tensor([[0.0, 5.0, 1.0], [0.0, 1.0, 5.0]]))
        steps(torch.zeros(2, 2, dtype=torch.long), torch.tensor([[0.0, 1.0, 5.0], [0.0, 5.0, 1.0]]))
    assert first.argmax(-1).tolist() == [2, 2]  # EOS (id 1) never wins
    assert steps.natural_stop == [0, 1]
    with pytest.raises(ValueError, match="unknown timing mode 'exact'"):
        Timer(mode="exact")


@pytest.mark.parametrize("arch", ["t5", "llama"])
@pytest.mark.parametrize("kv_heads", [8, 1])
def test_kv_bytes_from_cache_equal_formula(tokenizer, arch, kv_heads):
    model = make_t5() if arch == "t5" else make_decoder("llama")
    convert_to_gqa(model, kv_heads)
    timer = Timer(mode="fixed")
    generate(model, tokenizer, seqs(3, 9), max_new_tokens=5, batch_size=3, timer=timer, progress=False)
    measured = roofline.measured_kv_bytes(timer.batches)
    formula = roofline.kv_cache_bytes(model)
    assert measured["kv_cache_bytes_per_token_measured"] == formula["kv_cache_bytes_per_token"]
    assert formula["kv_cache_bytes_per_token"] == 2 * 2 * kv_heads * 4 * 4  # layers x K,V x G x d x fp32
    if arch == "t5":
        cross = measured["cross_kv_cache_bytes_per_source_token_measured"]
        assert cross == formula["cross_kv_cache_bytes_per_source_token"]


def test_fixed_mode_decodes_exactly_and_predicts_as_natural(tokenizer):
    model = make_t5(seed=3)
    inputs = seqs(6, 10, seed=1)
    first = model.generate(input_ids=torch.tensor([inputs[0]]), max_new_tokens=6, do_sample=False)
    with torch.no_grad():  # EOS (id 1) now ties with, and beats, row 0's 5th token: some rows stop early
        model.lm_head.weight[1] = model.lm_head.weight[first[0, 5]]
    natural, fixed = Timer(mode="natural"), Timer(mode="fixed")
    kwargs = {"max_new_tokens": 12, "batch_size": 3, "progress": False}
    pred_natural = generate(model, tokenizer, inputs, timer=natural, **kwargs)
    pred_fixed = generate(model, tokenizer, inputs, timer=fixed, **kwargs)
    assert natural.summary()["generated_tokens"] < 6 * 12, "some rows must stop at EOS for this test"
    assert fixed.summary()["generated_tokens"] == 6 * 12
    assert all(len(b.steps) == 11 for b in fixed.batches)
    assert pred_fixed == pred_natural
    assert len(set(pred_natural.values())) > 1


def test_repeats_time_every_batch_again_and_keep_one_record_per_batch(tokenizer):
    model = make_t5(seed=2)
    kwargs = {"max_new_tokens": 6, "batch_size": 2, "progress": False}
    once, thrice = Timer(mode="fixed"), Timer(mode="fixed", repeats=3)
    assert generate(model, tokenizer, seqs(5, 9), timer=thrice, **kwargs) == generate(
        model, tokenizer, seqs(5, 9), timer=once, **kwargs
    )
    assert len(thrice.batches) == len(once.batches) == 3 and len(thrice.pass_spreads) == 3
    s = thrice.summary()
    assert s["generated_tokens"] == 5 * 6 and s["timed_samples"] == 5 and s["pass_spread_median"] >= 0
    assert [b.cache_bytes for b in thrice.batches] == [b.cache_bytes for b in once.batches]


def test_prefill_and_decode_account_for_generation_time(tokenizer):
    model = convert_to_gqa(make_t5(), 2)
    timer = Timer(mode="fixed")
    generate(model, tokenizer, seqs(4, 30), max_new_tokens=16, batch_size=2, timer=timer, progress=False)
    s = timer.summary()
    assert s["timed_batches"] == 2  # the warm-up call is not counted
    assert 0.9 <= s["accounted_fraction"] <= 1.0
    for b in timer.batches:
        assert len(b.steps) == 15 and b.prefill > 0 and all(t > 0 for t in b.steps)
        assert b.prefill + sum(b.steps) <= b.seconds


def test_hardware_rates_are_measured_once_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("GQA_EVAL_CACHE_DIR", str(tmp_path))
    calls = []

    def fake_measure(device, dtype, repeats=5):
        calls.append(dtype)
        return {"memory_bytes_per_s": 2e10, "matmul_flops_per_s": 3e11}

    monkeypatch.setattr(roofline, "measure_rates", fake_measure)
    first = roofline.hardware_rates(torch.device("cpu"), torch.float32)
    second = roofline.hardware_rates(torch.device("cpu"), torch.float32)
    assert calls == [torch.float32] and first == second and first["memory_bytes_per_s"] == 2e10
    assert (tmp_path / roofline.RATES_FILE).is_file()


def test_measure_rates_are_plausible():
    rates = roofline.measure_rates(torch.device("cpu"), torch.float32, repeats=2)
    assert 1e8 < rates["memory_bytes_per_s"] < 1e13
    assert 1e8 < rates["matmul_flops_per_s"] < 1e15


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_event_timing_and_bf16(tokenizer):
    model = convert_to_gqa(make_t5(), 2).to("cuda", torch.bfloat16)
    timer = Timer(device=torch.device("cuda"), mode="fixed")
    generate(model, tokenizer, seqs(4, 20), max_new_tokens=8, batch_size=2, timer=timer, progress=False)
    s = timer.summary()
    assert s["time_per_sample_s"] > 0 and s["decode_s_per_token"] > 0
    assert 0.9 <= s["accounted_fraction"] <= 1.0
