"""Batches that fit: ``batch_size=auto`` backs off on out of memory and redoes the same examples (none lost,
none predicted or written twice, no timing kept of a failed attempt), one row that does not fit is a
one-line error, a token budget sizes batches by their tokens, and the config accepts ``auto``.

Out of memory is simulated by wrapping ``model.generate``: the wrapper raises, after the real call has
done its work, when a batch has more rows than the "device" holds. Predictions are compared with a run
of a fixed batch size that forms the same batches, so exact equality holds (the same padded tensors
through the same kernels on CPU); batches of another composition could differ by padding."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from conftest import make_decoder, make_t5, read_csv, read_predictions, seqs
from transformers import GenerationMixin

from gqa_eval.batching import BatchOutOfMemoryError, BatchStats, is_out_of_memory
from gqa_eval.evaluate import evaluate
from gqa_eval.generation import generate
from gqa_eval.report.summary import write_report
from gqa_eval.timing import Timer

NEW = 6  # max_new_tokens; the warm-up call generates min(4, NEW) = 4
CUDA_OOM = "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.15 GiB"
CPU_OOM = (
    "[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: you tried "
    "to allocate 4611686018427387904 bytes. Error code 12 (Cannot allocate memory)"
)


def device_of(model, fits: int, error=lambda: torch.OutOfMemoryError(CUDA_OOM), fail_calls=()):
    """Wrap ``model.generate`` as a device that holds ``fits`` rows and also fails the timed calls
    (``max_new_tokens=NEW``) numbered in ``fail_calls``, counted from 1. Returns the list that gets the
    rows of every call, warm-up ones included."""
    real, calls = model.generate, []
    timed = [0]

    def generate_on_device(**kwargs):
        rows = kwargs["input_ids"].shape[0]
        calls.append(rows)
        assert len(calls) < 50, "generate() retried without end"  # not an out of memory: raised as it is
        timed[0] += kwargs["max_new_tokens"] == NEW
        out = real(**kwargs)  # the work is done, then the allocation that does not fit fails
        if rows > fits or (kwargs["max_new_tokens"] == NEW and timed[0] in fail_calls):
            raise error()
        return out

    model.generate = generate_on_device
    return calls


def run(model, tokenizer, inputs, batch_size, **kwargs):
    """generate() with a batch log: (predictions, the batches on_batch saw, the timer, the stats)."""
    seen: list[list[int]] = []
    timer = Timer(repeats=kwargs.pop("repeats", 1))
    stats = BatchStats()
    predictions = generate(
        model, tokenizer, inputs, max_new_tokens=kwargs.pop("new", NEW), batch_size=batch_size, timer=timer,
        on_batch=lambda idx, texts: seen.append(list(idx)), progress=False, batch_stats=stats, **kwargs,
    )  # fmt: skip
    return predictions, seen, timer, stats


def each_once(seen: list[list[int]], n: int) -> bool:
    flat = [i for batch in seen for i in batch]
    return sorted(flat) == list(range(n))


@pytest.mark.parametrize("arch", ["t5", "llama"])
def test_auto_backs_off_to_the_batch_that_fits(tokenizer, arch):
    model = make_t5(seed=3) if arch == "t5" else make_decoder("llama", seed=3)
    inputs = seqs(10, 14)
    expected, expected_seen, _, _ = run(model, tokenizer, inputs, 2)
    calls = device_of(model, fits=2)
    predictions, seen, timer, stats = run(model, tokenizer, inputs, "auto", max_batch_size=8)
    # the warm-up of the first batch fails at 8 and 4 rows, works at 2; every batch then has 2
    assert calls == [8, 4, 2, 2, 2, 2, 2, 2]
    assert predictions == expected and seen == expected_seen and each_once(seen, 10)
    assert [b.samples for b in timer.batches] == [2] * 5
    assert stats.result() == {"batch_sizes_used": [2], "oom_retries": 2}


def test_a_batch_that_runs_out_mid_run_is_redone_in_halves_and_its_timing_dropped(tokenizer):
    model = make_t5(seed=3)
    inputs = seqs(10, 14)
    fixed4, _, _, _ = run(model, tokenizer, inputs, 4)
    fixed2, _, _, _ = run(model, tokenizer, inputs, 2)
    # timed calls, two passes a batch: batch 1 passes 1-2 fit, batch 2's first pass fits, its second fails
    calls = device_of(model, fits=8, fail_calls={4})
    written: dict[int, int] = {}
    predictions, seen, timer, stats = run(model, tokenizer, inputs, "auto", max_batch_size=4, repeats=2)
    for batch in seen:
        for i in batch:
            written[i] = written.get(i, 0) + 1
    assert calls == [4, 4, 4, 4, 4, 2, 2, 2, 2, 2, 2]  # warm-up; 2 + 2 passes; 3 batches of 2, 2 passes
    assert [len(b) for b in seen] == [4, 2, 2, 2] and written == dict.fromkeys(range(10), 1)
    # the same batches as batch_size=4 for the first four (longest) examples, as batch_size=2 after
    first = seen[0]
    assert {i: predictions[i] for i in first} == {i: fixed4[i] for i in first}
    assert {i: predictions[i] for i in range(10) if i not in first} == {
        i: fixed2[i] for i in range(10) if i not in first
    }
    # one record (the median pass) and one pass spread per completed batch: the failed pass's sibling,
    # recorded before the failure, is gone
    assert [b.samples for b in timer.batches] == [4, 2, 2, 2] and len(timer.pass_spreads) == 4
    assert timer.summary()["timed_samples"] == 10
    assert stats.result() == {"batch_sizes_used": [4, 2], "oom_retries": 1}


def test_out_of_memory_at_one_row_is_a_one_line_error(tokenizer):
    model = make_t5(seed=3)
    calls = device_of(model, fits=0)
    seen: list = []
    with pytest.raises(BatchOutOfMemoryError) as raised:
        generate(model, tokenizer, seqs(3, 10), max_new_tokens=NEW, batch_size="auto", max_batch_size=4,
                 timer=Timer(), on_batch=lambda idx, texts: seen.append(idx), progress=False)  # fmt: skip
    message = str(raised.value)
    assert calls == [3, 1] and seen == []  # 3 examples: the first batch has 3 rows, then 1
    assert "\n" not in message and "at batch size 1" in message
    assert "task.max_input_tokens" in message and "dtype=bfloat16" in message and "more memory" in message
    # the command line prints a ValueError in one line; code catching torch's error still catches it
    assert isinstance(raised.value, ValueError) and isinstance(raised.value, torch.OutOfMemoryError)


def test_a_fixed_batch_size_is_not_changed_out_of_memory_names_auto(tokenizer):
    model = make_t5(seed=3)
    calls = device_of(model, fits=2)
    with pytest.raises(BatchOutOfMemoryError, match=r"4 example\(s\) .* set batch_size=auto"):
        run(model, tokenizer, seqs(8, 10), 4)
    assert calls == [4]  # no retry at another size


def test_cpu_allocator_failure_backs_off_any_other_error_is_raised_as_it_is(tokenizer):
    assert is_out_of_memory(RuntimeError(CPU_OOM)) and not is_out_of_memory(RuntimeError("shape mismatch"))
    model = make_t5(seed=3)
    calls = device_of(model, fits=1, error=lambda: RuntimeError(CPU_OOM))
    predictions, seen, _, stats = run(model, tokenizer, seqs(3, 10), "auto", max_batch_size=2)
    assert calls == [2, 1, 1, 1, 1] and each_once(seen, 3) and stats.oom_retries == 1
    model = make_t5(seed=3)
    calls = device_of(model, fits=1, error=lambda: RuntimeError("shape mismatch"))
    with pytest.raises(RuntimeError, match="^shape mismatch$"):
        run(model, tokenizer, seqs(3, 10), "auto", max_batch_size=2)
    assert calls == [2]


def test_a_token_budget_sizes_batches_by_their_tokens(tokenizer):
    model = make_t5(seed=3)
    inputs = seqs(12, 16)  # 17, 16, ..., 6 tokens, each padded batch as wide as its first (longest) row
    budget = 70
    _, seen, timer, _ = run(model, tokenizer, inputs, 64, batch_tokens=budget)
    assert each_once(seen, 12)
    for k, batch in enumerate(seen):
        width = len(inputs[batch[0]])
        assert max(len(inputs[i]) for i in batch) == width
        assert len(batch) * (width + NEW) <= budget  # within the budget
        if k + 1 < len(seen):  # and as large as it allows: one row more would not fit
            assert (len(batch) + 1) * (width + NEW) > budget
    assert [len(b) for b in seen] == [3, 3, 4, 2]  # shorter inputs, more rows: 17+6=23 -> 3 ... 9+6 -> 7
    assert [b.samples for b in timer.batches] == [3, 3, 4, 2]
    # batch_size caps the rows; a budget smaller than one row still makes batches of one
    assert [len(b) for b in run(model, tokenizer, inputs, 2, batch_tokens=10**6)[1]] == [2] * 6
    assert [len(b) for b in run(model, tokenizer, inputs, "auto", batch_tokens=5)[1]] == [1] * 12


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("batch_size=0", r"^batch_size must be a whole number >= 1, got batch_size=0; set batch_size=N, or "
                         r"batch_size=auto for the largest batch that fits"),
        ("batch_size=foo", r"got batch_size='foo'; set batch_size=N, or batch_size=auto"),
        ("batch_size=true", r"got batch_size=True"),
        ("max_batch_size=0", r"max_batch_size \(where batch_size=auto starts\) must be a whole number >= 1"),
        ("batch_tokens=-5", r"batch_tokens .* must be a whole number >= 1 or null for no budget"),
    ],
)  # fmt: skip
def test_config_refuses_bad_batching_in_one_line(compose_cfg, tmp_path, override, message):
    with pytest.raises(ValueError, match=message) as raised:
        evaluate(compose_cfg([override]), output_dir=tmp_path / "run")
    assert "\n" not in str(raised.value) and not (tmp_path / "run").exists()


def test_auto_run_records_what_it_used_and_the_report_keeps_it_apart(compose_cfg, tmp_path, monkeypatch):
    real = GenerationMixin.generate

    def one_row_device(self, **kwargs):
        if kwargs["input_ids"].shape[0] > 1:
            raise torch.OutOfMemoryError(CUDA_OOM)
        return real(self, **kwargs)

    monkeypatch.setattr(GenerationMixin, "generate", one_row_device)
    quick = ["task=wmt_en_de", "limit=3", "task.max_new_tokens=2", "timing.roofline=false"]
    result = evaluate(
        compose_cfg([*quick, "batch_size=auto", "max_batch_size=2"]), output_dir=tmp_path / "runs" / "auto"
    )
    saved = json.loads((tmp_path / "runs" / "auto" / "result.json").read_text())
    assert saved == json.loads(json.dumps(result))
    assert (saved["batch_size"], saved["batch_sizes_used"], saved["oom_retries"]) == ("auto", [1], 1)
    assert saved["timing"]["timed_batches"] == 3 and saved["timing"]["timed_samples"] == 3
    rows = read_predictions(tmp_path / "runs" / "auto")
    assert sorted(r["index"] for r in rows) == [0, 1, 2]
    # next to a run of batch_size=8 the report keeps the auto run in a row of its own
    shutil.copytree(tmp_path / "runs" / "auto", tmp_path / "runs" / "eight")
    saved.update(batch_size=8, batch_sizes_used=[3], oom_retries=0)
    (tmp_path / "runs" / "eight" / "result.json").write_text(json.dumps(saved))
    write_report(tmp_path / "runs")
    summary = read_csv(tmp_path / "runs" / "summary.csv")
    assert sorted(r["batch_size"] for r in summary) == ["8", "auto"]
    table = read_csv(tmp_path / "runs" / "table.csv")
    assert len(table) == 2 and any("[batch_size=" in r["variant"] for r in table)
