"""CUDA paths: CUDA-event timing, bf16 generation, CUDA peak memory, the roofline rates measured on the GPU,
and the grouped attention on the GPU. Skipped where no GPU exists (never faked on the CPU)."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from conftest import make_decoder, make_t5, repeated_t5

from gqa_eval import roofline
from gqa_eval.evaluate import evaluate
from gqa_eval.variant.conversion import convert_to_gqa

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

QUICK = ["limit=4", "task.max_new_tokens=8", "batch_size=2"]


@pytest.mark.parametrize(("base", "model"), [("tiny_t5", "gqa4"), ("tiny_llama", "mqa")])
def test_evaluate_on_cuda_in_bf16(compose_cfg, tmp_path, base, model):
    overrides = [f"base={base}", f"model={model}", "task=cnn_dm", "device=cuda", "dtype=bfloat16"]
    result = evaluate(compose_cfg([*overrides, "timing.mode=fixed", *QUICK]), output_dir=tmp_path / "run")
    saved = json.loads((tmp_path / "run" / "result.json").read_text())
    env = saved["environment"]
    assert env["device"].startswith("cuda") and env["clock"] == "cuda_events"
    assert env["device_name"] == torch.cuda.get_device_name() and env["dtype"] == "bfloat16"
    assert saved["timing"]["generated_tokens"] == 4 * 8  # fixed mode: exactly the requested work
    for key in ("time_per_sample_s", "prefill_s_per_sample", "decode_s_per_token", "tokens_per_s",
                "peak_mem_mb", "decode_floor_s_per_step", "decode_floor_ratio"):  # fmt: skip
        assert saved[key] > 0, key
    assert saved["timing"]["accounted_fraction"] > 0.9
    # bf16 cache: 2 bytes an element, and the cache itself agrees with the formula
    assert saved["kv_cache_bytes_per_token_measured"] == saved["kv_cache_bytes_per_token"]
    # peak memory is the CUDA allocator's: at least the bf16 weights (several MB), at most the card
    assert 2 < saved["peak_mem_mb"] < torch.cuda.get_device_properties(0).total_memory / 2**20
    assert result["score"] == saved["score"]


def test_cuda_rates_are_measured_on_the_gpu():
    rates = roofline.measure_rates(torch.device("cuda"), torch.bfloat16, repeats=2)
    assert 1e11 < rates["memory_bytes_per_s"] < 1e14  # GPU memory: hundreds of GB/s to a few TB/s
    assert 1e12 < rates["matmul_flops_per_s"] < 1e16


@pytest.mark.parametrize("kv_heads", [1, 2])
def test_t5_grouped_attention_on_cuda(batch, kv_heads):
    original = make_t5()
    converted = convert_to_gqa(copy.deepcopy(original), kv_heads)
    reference = repeated_t5(converted, original)
    batch = {k: v.cuda() for k, v in batch.items()}
    for dtype, tol in ((torch.float32, 1e-4), (torch.bfloat16, 5e-2)):
        got = converted.to("cuda", dtype)(**batch).logits.float()
        want = reference.to("cuda", dtype)(**batch).logits.float()
        torch.testing.assert_close(got, want, atol=tol * want.abs().max().item(), rtol=tol)
    gen = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"], "max_new_tokens": 10}
    converted.float()
    reference.float()
    out = converted.generate(**gen, do_sample=False)
    assert len(set(out[:, 1:].flatten().tolist())) > 2
    assert torch.equal(out, reference.generate(**gen, do_sample=False))
    assert converted.decoder.block[0].layer[0].SelfAttention.k.out_features == kv_heads * 4


def test_llama_conversion_on_cuda_matches_cpu():
    model = make_decoder("llama", 8, 8)
    ids = torch.randint(3, 97, (2, 11), generator=torch.Generator().manual_seed(0))
    converted = convert_to_gqa(copy.deepcopy(model), 2)
    with torch.no_grad():
        cpu = converted(input_ids=ids).logits
        gpu = converted.to("cuda")(input_ids=ids.cuda()).logits.cpu()
    torch.testing.assert_close(gpu, cpu, atol=1e-4, rtol=1e-4)
    assert converted.config.num_key_value_heads == 2


@pytest.mark.parametrize("name", ["t5-mqa", "t5-mha", "llama-mqa"])
def test_compiled_decoding_with_cuda_graphs_equals_eager(name):
    """generation.compile on CUDA: the static cache and the compiled step, replayed as CUDA graphs, give
    the eager path's tokens and logits (fp32)."""
    from conftest import seqs
    from test_decode_path import MODELS, _generate, _padded

    from gqa_eval.decode_path import decode_path

    model = MODELS[name]().cuda()
    batch = seqs(4, 12, seed=1)
    batch[2] = batch[2][:5]
    ids, mask = (t.cuda() for t in _padded(batch, left=not model.config.is_encoder_decoder))
    eager = _generate(model, ids, mask, decode_path(False, device="cuda"))
    path = decode_path("auto", device="cuda")
    assert path.cuda_graphs
    for _ in range(2):  # the second call replays the recorded graphs
        out = _generate(model, ids, mask, path)
        assert torch.equal(out.sequences, eager.sequences)
        for a, b in zip(out.scores, eager.scores, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3)
