"""The calibrated conversion methods (aligned, clustered, clustered_aligned): exact before pooling,
identity at G=H, deterministic, refused where they cannot be exact, and saved/reloaded/evaluated as usual."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from conftest import make_decoder, make_t5, seqs

from gqa_eval.variant.calibration import kv_statistics
from gqa_eval.variant.checkpoints import load_checkpoint
from gqa_eval.variant.conversion import convert_to_gqa, save_converted
from gqa_eval.variant.family import family_of
from gqa_eval.variant.heads import CALIBRATED, prepare_heads
from gqa_eval.variant.t5 import bias_orders

SRC = torch.tensor([seqs(1, 11, seed=3)[0]])
DEC = torch.randint(3, 90, (1, 7), generator=torch.Generator().manual_seed(4))


def make(arch: str):
    return make_t5() if arch == "t5" else make_decoder()


def calibration(arch: str, n: int = 4) -> list[dict]:
    if arch == "t5":
        return [{"input_ids": torch.tensor([s]), "labels": torch.tensor([s[:6]])} for s in seqs(n, 10)]
    return [{"input_ids": torch.tensor([s])} for s in seqs(n, 12)]


@torch.no_grad()
def logits(model) -> torch.Tensor:
    if model.config.model_type == "t5":
        return model(input_ids=SRC, decoder_input_ids=DEC).logits
    return model(input_ids=SRC).logits


def reshaped_unpooled(model, method: str, groups: int = 2, cal=None):
    """``model`` with the method's rotations / permutations applied, K/V not pooled."""
    family = family_of(model)
    orders = prepare_heads(family, groups, method, kv_statistics(family, cal or calibration(family.name)))
    if orders:
        family.record_head_orders(orders)
    family.set_kv_heads(family.n_heads)  # T5: route the decoder through gqa_t5, which applies the bias order
    return model, orders


@pytest.mark.parametrize("arch", ["t5", "llama"])
@pytest.mark.parametrize("method", CALIBRATED)
def test_reshaping_heads_keeps_logits(arch, method):
    model = make(arch)
    before = logits(model)
    q_before = family_of(model).attentions().__next__().get_submodule(family_of(model).q_name).weight.clone()
    reshaped, orders = reshaped_unpooled(model, method)
    family = family_of(reshaped)
    q_after = next(family.attentions()).get_submodule(family.q_name).weight
    assert not torch.allclose(q_before, q_after)  # the heads did change
    if method.startswith("clustered"):
        assert orders  # spread weights: similarity groups are not the index groups
        if arch == "t5":
            assert any(o is not None for o in bias_orders(reshaped))
    torch.testing.assert_close(logits(reshaped), before, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch", ["t5", "llama"])
@pytest.mark.parametrize("method", ["mean", "first", "random", *CALIBRATED])
def test_g_equals_h_is_identity(arch, method):
    model = make(arch)
    before = logits(model)
    convert_to_gqa(model, 8, method=method, calibration=calibration(arch))
    assert torch.equal(logits(model), before)


@pytest.mark.parametrize("arch", ["t5", "llama"])
@pytest.mark.parametrize("method", CALIBRATED)
def test_calibrated_methods_are_deterministic_and_differ_from_mean(arch, method):
    a, b, mean = make(arch), make(arch), make(arch)
    convert_to_gqa(a, 2, method=method, calibration=calibration(arch))
    convert_to_gqa(b, 2, method=method, calibration=calibration(arch))
    convert_to_gqa(mean, 2, method="mean")
    for pa, pb in zip(a.state_dict().values(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb)
    assert torch.equal(logits(a), logits(b))
    assert not torch.allclose(logits(a), logits(mean))
    entry = a.config.gqa_conversion[-1]
    assert (entry["method"], entry["kv_heads"], entry["calibration"]) == (method, 2, {"examples": 4})


def test_alignment_reduces_pooling_error():
    """Aligned keys of a group are closer to their mean than unaligned ones (what the method is for)."""
    model = make_t5()
    family = family_of(model)
    stats = kv_statistics(family, calibration("t5"))

    def spread(gram):  # sum over heads of ||A_h - mean_g A||^2 for two groups of four, from the Gram
        blocks = gram.reshape(8, 4, 8, 4)
        total = 0.0
        for g in range(2):
            hs = range(4 * g, 4 * g + 4)
            mean_sq = sum(torch.einsum("dd->", blocks[h, :, k, :]) for h in hs for k in hs) / 4
            total += sum(torch.einsum("dd->", blocks[h, :, h, :]) for h in hs) - mean_sq
        return float(total)

    before = spread(stats[0][0])
    aligned, _ = reshaped_unpooled(make_t5(), "aligned")
    after = spread(kv_statistics(family_of(aligned), calibration("t5"))[0][0])
    assert after < before


def test_invalid_combinations_raise():
    cal = calibration("t5")
    with pytest.raises(ValueError, match="unknown conversion method 'procrustes'"):
        convert_to_gqa(make_t5(), 2, method="procrustes", calibration=cal)
    with pytest.raises(ValueError, match="does not divide"):
        convert_to_gqa(make_t5(), 3, method="aligned", calibration=cal)
    with pytest.raises(ValueError, match="needs calibration inputs"):
        convert_to_gqa(make_t5(), 2, method="clustered")
    grouped = make_decoder(kv_heads=4)
    with pytest.raises(ValueError, match="already has 4 key/value heads"):
        convert_to_gqa(grouped, 2, method="clustered", calibration=calibration("llama"))
    from transformers import Qwen3Config, Qwen3ForCausalLM

    qwen3 = Qwen3ForCausalLM(Qwen3Config(
        vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
        num_key_value_heads=4, head_dim=8,
    ))  # fmt: skip
    with pytest.raises(ValueError, match="cannot rotate qwen3 heads exactly.*q_norm"):
        convert_to_gqa(qwen3, 2, method="aligned", calibration=calibration("llama"))
    convert_to_gqa(qwen3, 2, method="clustered", calibration=calibration("llama"))  # permuting is exact


def test_clustered_t5_saves_and_reloads(tmp_path, t5_tokenizer):
    model = convert_to_gqa(make_t5(), 2, method="clustered_aligned", calibration=calibration("t5"))
    assert model.config.gqa_bias_head_order is not None
    out = save_converted(model, t5_tokenizer, tmp_path / "ckpt")
    reloaded, _ = load_checkpoint(str(out))
    assert bias_orders(reloaded) == bias_orders(model)
    assert torch.equal(logits(reloaded), logits(model))
    record = json.loads((out / "gqa_conversion.json").read_text())
    assert record["history"][-1]["method"] == "clustered_aligned"


def test_llama_clustered_saves_and_reloads(tmp_path, t5_tokenizer):
    model = convert_to_gqa(make_decoder(), 2, method="clustered", calibration=calibration("llama"))
    reloaded, _ = load_checkpoint(str(save_converted(model, t5_tokenizer, tmp_path / "ckpt")))
    assert torch.equal(logits(reloaded), logits(model))


@pytest.mark.parametrize("method", ["aligned", "clustered"])
def test_evaluate_with_calibrated_conversion(compose_cfg, tmp_path, method):
    from gqa_eval.evaluate import evaluate

    overrides = ["model=gqa4", f"model.conversion={method}", "model.calibration.examples=3",
                 "task=wmt_en_de", "limit=2", "task.max_new_tokens=5"]  # fmt: skip
    result = evaluate(compose_cfg(overrides), output_dir=tmp_path / "run")
    assert result["kv_heads"] == 4
    saved = json.loads((tmp_path / "run" / "result.json").read_text())
    calibration_record = saved["provenance"]["calibration"]
    assert (calibration_record["examples"], calibration_record["seed"]) == (3, 0)
    assert "cnn_dm" in calibration_record["tasks"]


def test_convert_command_clustered_t5(compose_cfg, tmp_path):
    from gqa_eval.variant.conversion import convert_checkpoint

    out = tmp_path / "gqa4"
    convert_checkpoint(compose_cfg(
        [f"out={out}", "kv_heads=4", "conversion=clustered", "calibration.examples=2"], config_name="convert"
    ))  # fmt: skip
    saved, _ = load_checkpoint(str(out))
    fresh, tokenizer = load_checkpoint("evals/checkpoints/tiny_t5")
    from gqa_eval.variant.conversion import calibrate_and_convert

    calibrate_and_convert(fresh, tokenizer, 4, "clustered", 0, {"examples": 2})
    ids = torch.randint(3, 500, (1, 12), generator=torch.Generator().manual_seed(0))
    dec = torch.zeros((1, 3), dtype=torch.long)
    with torch.no_grad():
        assert torch.equal(saved(input_ids=ids, decoder_input_ids=dec).logits,
                           fresh(input_ids=ids, decoder_input_ids=dec).logits)  # fmt: skip
    assert copy.deepcopy(saved.config.gqa_conversion[-1]["calibration"])["examples"] == 2
