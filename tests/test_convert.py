"""Conversion invariants (arXiv 2305.13245): G=H is the identity, G<H equals MHA with pooled K/V heads
repeated per group, the cache holds G heads, and bad requests raise with the numbers in the message."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from conftest import make_decoder, make_t5, repeated_t5

from gqa_eval import convert_to_gqa, pool_heads, t5_decoder_attentions  # the public import path
from gqa_eval.variant.attention import grouped_attention
from gqa_eval.variant.checkpoints import load_checkpoint


def t5_logits(model, batch):
    with torch.no_grad():
        return model(**batch).logits


def test_grouped_attention_equals_sdpa_on_repeated_kv():
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(2, 8, 5, 4, generator=gen)  # (B, H, T, D)
    k = torch.randn(2, 2, 7, 4, generator=gen)  # (B, G, S, D)
    v = torch.randn(2, 2, 7, 4, generator=gen)
    bias = torch.randn(1, 8, 5, 7, generator=gen)
    got = grouped_attention(q, k, v, bias, scaling=1.0)  # (B, T, H, D)
    want = F.scaled_dot_product_attention(
        q, k.repeat_interleave(4, dim=1), v.repeat_interleave(4, dim=1), attn_mask=bias, scale=1.0
    ).transpose(1, 2)
    torch.testing.assert_close(got, want)


def test_grouped_attention_accepts_a_non_contiguous_kernel_output(monkeypatch):
    """CUDA's SDPA kernels can return (B, G, r*T, D) in a (B, r*T, G, D) memory layout (seen on an H200)."""
    sdpa = F.scaled_dot_product_attention

    def strided_sdpa(*args, **kwargs):
        return sdpa(*args, **kwargs).transpose(1, 2).contiguous().transpose(1, 2)

    gen = torch.Generator().manual_seed(1)
    q, k, v = (
        torch.randn(2, 8, 1, 4, generator=gen),
        torch.randn(2, 2, 7, 4, generator=gen),
        torch.randn(2, 2, 7, 4, generator=gen),
    )
    want = grouped_attention(q, k, v, None, scaling=1.0)
    monkeypatch.setattr("gqa_eval.variant.attention.F.scaled_dot_product_attention", strided_sdpa)
    torch.testing.assert_close(grouped_attention(q, k, v, None, scaling=1.0), want)


def test_t5_full_heads_is_identity(batch):
    model = make_t5()
    before = t5_logits(model, batch)
    after = t5_logits(convert_to_gqa(copy.deepcopy(model), 8), batch)
    assert torch.equal(before, after)


@pytest.mark.parametrize("kv_heads", [1, 2, 4])
def test_t5_grouped_equals_mha_with_pooled_heads(batch, kv_heads):
    original = make_t5()
    converted = convert_to_gqa(copy.deepcopy(original), kv_heads)
    reference = repeated_t5(converted, original)
    torch.testing.assert_close(t5_logits(converted, batch), t5_logits(reference, batch), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(t5_logits(converted, batch), t5_logits(original, batch), atol=1e-3)
    gen = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"], "max_new_tokens": 12}
    out = converted.generate(**gen, do_sample=False)
    assert len(set(out[:, 1:].flatten().tolist())) > 2, "the test model must emit varied tokens"
    assert torch.equal(out, reference.generate(**gen, do_sample=False))
    assert torch.equal(out, converted.generate(**gen, do_sample=False, use_cache=False))


def test_t5_encoder_untouched_and_weights_shrink():
    original = make_t5()
    converted = convert_to_gqa(copy.deepcopy(original), 2)
    for (name, p), (_, q) in zip(
        original.encoder.named_parameters(), converted.encoder.named_parameters(), strict=True
    ):
        assert torch.equal(p, q), name
    for attn in t5_decoder_attentions(converted):
        assert attn.k.weight.shape == (2 * 4, 32) and attn.v.weight.shape == (2 * 4, 32)
    removed = sum(p.numel() for p in original.parameters()) - sum(p.numel() for p in converted.parameters())
    # 2 decoder layers x (self + cross) x (K + V) x (8 - 2 heads) x d_kv 4 x d_model 32
    assert removed == 2 * 2 * 2 * 6 * 4 * 32
    assert converted.config.num_key_value_heads == 2
    assert converted.config.gqa_conversion[-1] == {
        "from_kv_heads": 8,
        "kv_heads": 2,
        "method": "mean",
        "seed": 0,
    }


def test_t5_cache_holds_kv_heads(batch):
    model = convert_to_gqa(make_t5(), 2)
    out = model.generate(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], max_new_tokens=4,
        do_sample=False, return_dict_in_generate=True,
    )  # fmt: skip
    cache = out.past_key_values
    self_k = cache.self_attention_cache.layers[0].keys
    cross_k = cache.cross_attention_cache.layers[0].keys
    assert self_k.shape[1] == 2 and cross_k.shape[1] == 2  # (B, G, T, D)
    assert cross_k.shape[2] == batch["input_ids"].shape[1]


def test_pool_methods_as_defined():
    w = torch.arange(8 * 3 * 5, dtype=torch.float32).view(8 * 3, 5)  # 8 heads of width 3
    heads = w.view(8, 3, 5)
    mean = pool_heads(w, 2, 3, "mean").view(2, 3, 5)
    torch.testing.assert_close(mean[0], heads[0:4].mean(0))
    torch.testing.assert_close(mean[1], heads[4:8].mean(0))
    first = pool_heads(w, 2, 3, "first").view(2, 3, 5)
    assert torch.equal(first[0], heads[0]) and torch.equal(first[1], heads[4])
    r1 = pool_heads(w, 2, 3, "random", torch.Generator().manual_seed(3), init_std=0.5)
    r2 = pool_heads(w, 2, 3, "random", torch.Generator().manual_seed(3), init_std=0.5)
    assert torch.equal(r1, r2) and not torch.allclose(r1, mean.view(6, 5))
    assert 0.3 < r1.std().item() < 0.7


@pytest.mark.parametrize("method", ["first", "random"])
def test_t5_methods_differ_from_mean(batch, method):
    original = make_t5()
    mean = convert_to_gqa(copy.deepcopy(original), 2, "mean")
    other = convert_to_gqa(copy.deepcopy(original), 2, method)
    assert not torch.allclose(t5_logits(mean, batch), t5_logits(other, batch), atol=1e-3)
    attn = next(t5_decoder_attentions(other))
    first_head = next(t5_decoder_attentions(original)).k.weight.data[:4]
    assert torch.equal(attn.k.weight.data[:4], first_head) == (method == "first")


@pytest.mark.parametrize("family", ["llama", "mistral", "qwen2"])
def test_decoder_families_grouped_equals_repeated(family):
    original = make_decoder(family)
    converted = convert_to_gqa(copy.deepcopy(original), 2)
    reference = copy.deepcopy(original)
    for src, dst in zip(converted.model.layers, reference.model.layers, strict=True):
        for proj in ("k_proj", "v_proj"):
            w = getattr(src.self_attn, proj).weight.data.view(2, 1, 4, 32).expand(2, 4, 4, 32).reshape(32, 32)
            getattr(dst.self_attn, proj).weight.data = w.clone()
            bias = getattr(src.self_attn, proj).bias
            if bias is not None:
                getattr(dst.self_attn, proj).bias.data = (
                    bias.data.view(2, 1, 4).expand(2, 4, 4).reshape(32).clone()
                )
    ids = torch.randint(3, 97, (2, 9), generator=torch.Generator().manual_seed(2))
    mask = torch.ones_like(ids)
    mask[0, :3] = 0  # left padding
    with torch.no_grad():
        got = converted(input_ids=ids, attention_mask=mask).logits
        want = reference(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(got[1], want[1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got[0, 3:], want[0, 3:], atol=1e-5, rtol=1e-5)
    assert converted.config.num_key_value_heads == 2
    assert all(layer.self_attn.k_proj.out_features == 8 for layer in converted.model.layers)
    out = converted.generate(input_ids=ids, attention_mask=mask, max_new_tokens=6, do_sample=False,
                             return_dict_in_generate=True)  # fmt: skip
    assert out.past_key_values.layers[0].keys.shape[1] == 2
    assert torch.equal(out.sequences, reference.generate(input_ids=ids, attention_mask=mask, max_new_tokens=6,
                                                         do_sample=False))  # fmt: skip


def test_grouped_to_fewer_heads_equals_direct():
    """Mean of equal-size group means is the mean over the original heads."""
    original = make_decoder("llama")
    via4 = convert_to_gqa(convert_to_gqa(copy.deepcopy(original), 4), 2)
    direct = convert_to_gqa(copy.deepcopy(original), 2)
    for a, b in zip(via4.model.layers, direct.model.layers, strict=True):
        torch.testing.assert_close(a.self_attn.k_proj.weight, b.self_attn.k_proj.weight)
    assert [c["kv_heads"] for c in via4.config.gqa_conversion] == [4, 2]


@pytest.mark.parametrize("arch", ["t5", "llama"])
def test_save_reload_round_trip(tmp_path, batch, arch):
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    model = convert_to_gqa(make_t5() if arch == "t5" else make_decoder("llama"), 2)
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    tok = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="<unk>")),
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
    )
    model.save_pretrained(tmp_path / "ckpt")
    tok.save_pretrained(tmp_path / "ckpt")
    reloaded, _ = load_checkpoint(str(tmp_path / "ckpt"))
    inputs = (
        batch
        if arch == "t5"
        else {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    )
    with torch.no_grad():
        assert torch.equal(model.eval()(**inputs).logits, reloaded(**inputs).logits)
    assert reloaded.config.num_key_value_heads == 2


@pytest.mark.parametrize(
    ("kv_heads", "message"),
    [(3, "kv_heads=3 does not divide the model's 8 key/value heads"), (16, "kv_heads=16 is larger than"),
     (0, "positive integer")],
)  # fmt: skip
def test_invalid_kv_heads_raise(kv_heads, message):
    for model in (make_t5(), make_decoder("llama")):
        with pytest.raises(ValueError, match=message):
            convert_to_gqa(model, kv_heads)


def test_unsupported_architecture_and_method_raise():
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=10))
    with pytest.raises(ValueError, match="unsupported architecture 'gpt2'.*t5, llama"):
        convert_to_gqa(gpt2, 1)
    with pytest.raises(ValueError, match="unknown conversion method 'median'"):
        convert_to_gqa(make_t5(), 2, method="median")


def test_convert_command_output_evaluates_like_on_the_fly(compose_cfg, tmp_path):
    from gqa_eval.evaluate import evaluate
    from gqa_eval.variant.conversion import convert_checkpoint as convert

    out = tmp_path / "gqa4"
    convert(compose_cfg([f"out={out}", "kv_heads=4"], config_name="convert"))
    record = json.loads((out / "gqa_conversion.json").read_text())
    assert (record["kv_heads"], record["n_heads"], record["base"]) == (4, 16, "tiny_t5")
    saved, _ = load_checkpoint(str(out))
    fresh, _ = load_checkpoint("evals/checkpoints/tiny_t5")
    convert_to_gqa(fresh, 4)
    ids = torch.randint(3, 500, (2, 20), generator=torch.Generator().manual_seed(0))
    dec = torch.zeros((2, 3), dtype=torch.long)
    with torch.no_grad():
        assert torch.equal(saved(input_ids=ids, decoder_input_ids=dec).logits,
                           fresh(input_ids=ids, decoder_input_ids=dec).logits)  # fmt: skip
    quick = ["task=wmt_en_de", "limit=2", "task.max_new_tokens=5"]
    a = evaluate(compose_cfg(["model=saved", f"model.checkpoint={out}", *quick]), output_dir=tmp_path / "a")
    b = evaluate(compose_cfg(["model=gqa4", *quick]), output_dir=tmp_path / "b")
    assert a["kv_heads"] == b["kv_heads"] == 4
    assert (tmp_path / "a/predictions.jsonl").read_text() == (tmp_path / "b/predictions.jsonl").read_text()
    with pytest.raises(FileExistsError, match="is not empty"):
        convert(compose_cfg([f"out={out}", "kv_heads=2"], config_name="convert"))
    assert json.loads((out / "gqa_conversion.json").read_text())["kv_heads"] == 4


@pytest.mark.parametrize("arch", ["t5", "llama"])
def test_decode_attention_reads_only_kv_heads(monkeypatch, arch):
    """On the decode path SDPA gets K/V with G heads: they are never repeated to H heads."""
    model = convert_to_gqa(make_t5() if arch == "t5" else make_decoder("llama"), 2)
    seen = []
    sdpa = F.scaled_dot_product_attention

    def spy(q, k, v, *args, **kwargs):
        seen.append((q.shape[-2], k.shape[1], v.shape[1]))
        return sdpa(q, k, v, *args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    ids = torch.randint(3, 97, (2, 11), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[0, :2] = 0  # (left) padding, so masks are passed as on real batches
    model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=5, do_sample=False)
    decode = [s for s in seen if s[0] <= 4]  # one query position per head, or the 4 heads of a group folded
    assert decode and all(k == v == 2 for _, k, v in decode), decode


def test_conversion_is_in_place_and_light():
    model = make_decoder("llama")
    untouched = {n: p for n, p in model.named_parameters() if "k_proj" not in n and "v_proj" not in n}
    same = convert_to_gqa(model, 2)
    assert same is model
    after = dict(model.named_parameters())
    assert all(after[n] is p for n, p in untouched.items())  # no copy of anything but the pooled K/V
