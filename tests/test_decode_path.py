"""The decode path: a static KV cache and a torch.compile'd decode step give the eager path's outputs.

Compiled on CPU here (inductor), as on CUDA apart from the CUDA graphs. Every model is spread-weight
(default-init tiny models emit one constant token), and scores are compared as well as tokens.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
import torch._dynamo.utils as dynamo_utils
from conftest import IdsTokenizer as _Ids
from conftest import compose_config, make_decoder, make_t5, seqs

from gqa_eval.decode_path import DecodePath, decode_path
from gqa_eval.generation import generate
from gqa_eval.paths import PROJECT_ROOT
from gqa_eval.timing import Timer
from gqa_eval.variant.conversion import convert_to_gqa

MODELS = {
    "t5-mha": lambda: make_t5(),
    "t5-mqa": lambda: convert_to_gqa(make_t5(), 1),
    "llama-mha": lambda: make_decoder(),
    "llama-mqa": lambda: convert_to_gqa(make_decoder(), 1),
}


def _padded(batch, left):
    width = max(map(len, batch))
    ids = torch.zeros(len(batch), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, row in enumerate(batch):
        cols = slice(width - len(row), width) if left else slice(0, len(row))
        ids[i, cols], mask[i, cols] = torch.tensor(row), 1
    return ids, mask


def _generate(model, ids, mask, path: DecodePath, new: int = 10):
    decoder_only = not model.config.is_encoder_decoder
    with torch.inference_mode():
        return model.generate(
            input_ids=ids, attention_mask=mask, max_new_tokens=new, do_sample=False, num_beams=1,
            pad_token_id=0,
            return_dict_in_generate=True, output_scores=True,
            **path.generate_kwargs(ids.shape[1], new, decoder_only),
        )  # fmt: skip


@pytest.mark.parametrize("name", list(MODELS))
def test_static_and_compiled_decoding_equal_eager(name):
    model = MODELS[name]()
    batch = seqs(4, 12, seed=1)
    batch[2] = batch[2][:5]  # padding in the batch
    ids, mask = _padded(batch, left=not model.config.is_encoder_decoder)
    eager = _generate(model, ids, mask, decode_path(False))
    assert eager.sequences[:, -10:].unique().numel() > 5  # outputs vary: the comparison means something
    for path in (decode_path(False, "static"), decode_path(True)):
        out = _generate(model, ids, mask, path)
        assert torch.equal(out.sequences, eager.sequences), path.name
        for step, (a, b) in enumerate(zip(out.scores, eager.scores, strict=True)):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4, msg=f"{path.name} step {step}")
    assert hasattr(model, "_compiled_call")  # the compiled path did compile (transformers skips it silently)


def test_compiled_generate_warms_every_shape_outside_the_timed_region():
    """Through the evaluation's generate(): the same predictions as eager, one untimed warm-up per new
    (rows, padded width), and no compilation inside any timed batch."""
    model = convert_to_gqa(make_t5(), 2)
    inputs = [row[: 4 + 2 * i] for i, row in enumerate(seqs(10, 24, seed=3))]
    eager = generate(model, _Ids(), inputs, max_new_tokens=8, batch_size=4, timer=Timer(), progress=False)
    timer = Timer(mode="fixed")
    compiles_in_timed = []
    batch = timer.batch

    def watched(*args, **kwargs):
        class Watch:
            def __enter__(self):
                self.cm = batch(*args, **kwargs)
                self.before = dynamo_utils.counters["stats"]["unique_graphs"]
                return self.cm.__enter__()

            def __exit__(self, *exc):
                compiles_in_timed.append(dynamo_utils.counters["stats"]["unique_graphs"] - self.before)
                return self.cm.__exit__(*exc)

        return Watch()

    timer.batch = watched
    path = decode_path(True, pad_to_multiple_of=8)
    compiled = generate(
        model, _Ids(), inputs, max_new_tokens=8, batch_size=4, timer=timer, progress=False, decode=path
    )
    assert compiled == eager
    widths = {(len(b), path.padded_width(max(map(len, b)))) for b in _batches(inputs, 4)}
    assert timer.warmup_calls == len(widths) == 3
    assert timer.summary()["warmup_s"] > 0
    assert len(compiles_in_timed) == 3 and set(compiles_in_timed) == {0}


def _batches(inputs, size):
    order = sorted(inputs, key=len, reverse=True)
    return [order[k : k + size] for k in range(0, len(order), size)]


def test_decode_path_settings():
    assert decode_path("auto", device="cpu") == DecodePath()  # eager on CPU
    gpu = decode_path("auto", device="cuda")
    assert (gpu.compiled, gpu.static, gpu.cuda_graphs, gpu.pad_to_multiple_of) == (True, True, True, 64)
    assert gpu.generate_kwargs(100, 16, decoder_only=True)["compile_config"].mode == "reduce-overhead"
    cpu = decode_path(True, device="cpu")
    assert (
        cpu.name == "compiled"
        and cpu.generate_kwargs(100, 16, decoder_only=True)["compile_config"].mode == "default"
    )
    assert cpu.generate_kwargs(100, 16, decoder_only=True)["max_cache_len"] == 116
    assert cpu.generate_kwargs(100, 16, decoder_only=False)["max_cache_len"] == 17  # start token + output
    static = decode_path(False, "static")
    assert static.name == "static" and static.generate_kwargs(8, 4, False)["disable_compile"] is True
    assert decode_path(False).generate_kwargs(8, 4, False) == {}
    assert decode_path(True, pad_to_multiple_of=8).padded_width(17) == 24
    for bad, message in [
        (dict(compile_setting="yes"), "generation.compile must be auto, true or false"),
        (dict(cache="paged"), "generation.cache must be auto, static or dynamic"),
        (dict(compile_setting=True, cache="dynamic"), "needs the static KV cache"),
        (dict(pad_to_multiple_of=0), "generation.pad_to_multiple_of must be auto or a whole number"),
    ]:
        with pytest.raises(ValueError, match=message):
            decode_path(**bad)


def test_evaluate_refuses_a_bad_generation_setting_before_loading():
    from gqa_eval.refusals import check_config

    with pytest.raises(ValueError, match="generation.compile must be auto, true or false, got 'sometimes'"):
        check_config(compose_config(overrides=["generation.compile=sometimes"]))
    check_config(compose_config(overrides=["generation.compile=true"]))


@pytest.mark.parametrize(
    "args",
    [
        ["--d-model", "32", "--heads", "4", "--layers", "1", "--vocab", "128", "--compile", "true"],
        ["--shape", "t5-small", "--kv-heads", "3,1"],
    ],
)
def test_decode_benchmark_runs(args):
    """The decode benchmark prints a row per variant (it once broke on a renamed import, unnoticed)."""
    cmd = [sys.executable, "benchmarks/decode_speed.py", *args,
           "--batch", "2", "--source", "16", "--new", "3",
           "--repeats", "1", "--threads", "1"]  # fmt: skip
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}  # the session's rates cache (conftest)
    proc = subprocess.run(cmd, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [
        line.split()
        for line in proc.stdout.splitlines()
        if line.split()[:1] in (["mha"], ["gqa2"], ["gqa3"], ["mqa"])
    ]
    expected = ["mha", "gqa2", "mqa"] if "--heads" in args else ["mha", "gqa3", "mqa"]
    assert [r[0] for r in rows] == expected
    assert all(float(r[2]) > 0 for r in rows)  # decode ms/step measured


def test_decode_kernels_benchmark_runs():
    """benchmarks/decode_kernels.py times every matmul shape and attention candidate (each checked against
    the float64 reference first) and names the fastest."""
    cmd = [sys.executable, "benchmarks/decode_kernels.py", "--batch", "2", "--source", "32", "--repeats", "1",
           "--threads", "1"]  # fmt: skip
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    proc = subprocess.run(cmd, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "LM head" in proc.stdout and "512x32128" in proc.stdout
    kv_rows = [
        line.split()[0]
        for line in proc.stdout.splitlines()
        if line.split()[:1] in (["6"], ["3"], ["2"], ["1"])
    ]
    assert kv_rows == ["6", "3", "2", "1"]


def test_result_records_the_decode_path_that_ran(tmp_path, monkeypatch):
    """transformers silently runs the eager step where it will not compile (a quantizer, CPU offload, a
    cache it cannot compile): result.json says what ran, and what was asked for beside it."""
    from transformers import GenerationMixin

    from gqa_eval.evaluate import evaluate

    assert DecodePath(compiled=True, static=True).ran_on(torch.nn.Linear(1, 1)).name == "static"
    monkeypatch.setattr(GenerationMixin, "_valid_auto_compile_criteria", lambda *args: False)
    overrides = [f"output_root={tmp_path}", "limit=2", "task.max_new_tokens=3", "generation.compile=true",
                 "timing.roofline=false", "progress=false"]  # fmt: skip
    result = evaluate(compose_config(overrides=overrides), output_dir=tmp_path / "run")
    assert (result["decode_path"], result["decode_path_requested"]) == ("static", "compiled")
