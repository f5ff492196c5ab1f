"""Encoder-decoder families beyond T5 (BART, mBART, Pegasus, Marian): the decoder's self- and
cross-attention converted (K/V weights and biases pooled), the encoder untouched, G=H the identity, G<H
equal to MHA with the pooled heads repeated per group, both caches holding G heads, a saved checkpoint
reloading identically, and a run through ``evaluate()``."""

from __future__ import annotations

import copy
import inspect

import pytest
import torch
import transformers
from torch import nn

from gqa_eval import convert_to_gqa
from gqa_eval.generation import returned_cache
from gqa_eval.variant.attention import ATTN_IMPLEMENTATION
from gqa_eval.variant.bart import BartFamily, bart_decoder_attentions
from gqa_eval.variant.calibration import kv_statistics
from gqa_eval.variant.checkpoints import load_checkpoint
from gqa_eval.variant.family import family_of, supported
from gqa_eval.variant.heads import CALIBRATED, prepare_heads

FAMILIES = {
    "bart": (transformers.BartConfig, transformers.BartForConditionalGeneration),
    "mbart": (transformers.MBartConfig, transformers.MBartForConditionalGeneration),  # pre-LN, final LNs
    "pegasus": (transformers.PegasusConfig, transformers.PegasusForConditionalGeneration),  # sinusoidal
    "marian": (transformers.MarianConfig, transformers.MarianMTModel),  # sinusoidal, no final LN
}
VOCAB, HEADS, DIM, WIDTH = 100, 4, 64, 16  # WIDTH: head width d_model / heads


def make_seq2seq(model_type: str, vocab: int = VOCAB, seed: int = 0, std: float = 0.2) -> nn.Module:
    """A tiny random model of ``model_type``, its Linear and Embedding weights AND biases redrawn from
    N(0, std) so outputs vary and the K/V biases (zeros at init) matter; the sinusoidal position tables
    of Pegasus and Marian are left as they are (transformers rebuilds them, they are not learned)."""
    cfg_cls, model_cls = FAMILIES[model_type]
    config = cfg_cls(
        vocab_size=vocab, d_model=DIM, encoder_layers=2, decoder_layers=2, encoder_attention_heads=HEADS,
        decoder_attention_heads=HEADS, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=128,
        dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, tie_word_embeddings=False,
        pad_token_id=0, eos_token_id=1, bos_token_id=0, decoder_start_token_id=0, forced_eos_token_id=None,
    )  # fmt: skip
    torch.manual_seed(seed)
    model = model_cls(config)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)) and "Sinusoidal" not in type(module).__name__:
                for p in module.parameters(recurse=False):
                    p.copy_(torch.randn(p.shape, generator=gen) * std)
    return model.eval()


def repeated(converted: nn.Module, original: nn.Module) -> nn.Module:
    """An MHA copy of ``original`` whose decoder K/V heads (weights and biases) are each group's
    converted head repeated H/G times."""
    reference = copy.deepcopy(original)
    for src, dst in zip(bart_decoder_attentions(converted), bart_decoder_attentions(reference), strict=True):
        for name in ("k_proj", "v_proj"):
            lin, out = getattr(src, name), getattr(dst, name)
            g = lin.weight.shape[0] // WIDTH
            w = lin.weight.data.view(g, 1, WIDTH, DIM).expand(g, HEADS // g, WIDTH, DIM)
            b = lin.bias.data.view(g, 1, WIDTH).expand(g, HEADS // g, WIDTH)
            out.weight.data = w.reshape(HEADS * WIDTH, DIM).clone()
            out.bias.data = b.reshape(HEADS * WIDTH).clone()
    return reference


def make_batch(vocab: int = VOCAB) -> dict[str, torch.Tensor]:
    """A padded batch (row 0's source padded) of source and decoder ids."""
    gen = torch.Generator().manual_seed(1)
    input_ids = torch.randint(3, vocab, (3, 11), generator=gen)
    mask = torch.ones_like(input_ids)
    mask[0, 7:] = 0
    input_ids[0, 7:] = 0
    decoder_input_ids = torch.randint(3, vocab, (3, 6), generator=gen)
    return {"input_ids": input_ids, "attention_mask": mask, "decoder_input_ids": decoder_input_ids}


BATCH = make_batch()


@torch.no_grad()
def logits(model, batch=BATCH) -> torch.Tensor:
    return model(**batch).logits


def test_families_registered():
    assert {"bart", "mbart", "pegasus", "marian"} <= set(supported())
    for model_type in FAMILIES:
        family = family_of(make_seq2seq(model_type))
        assert isinstance(family, BartFamily) and family.name == model_type
        geometry = (family.n_heads, family.kv_heads, family.head_dim, family.cache_layers)
        assert geometry == (HEADS, HEADS, WIDTH, 2)
        assert family.encoder_decoder and len(list(family.attentions())) == 4  # 2 layers x (self, cross)
        assert family.cache_contexts(5, 11) == [5, 11]  # the self cache, then the cross cache
        cross = {
            id(p) for layer in family.model.model.decoder.layers for p in layer.encoder_attn.parameters()
        }
        prefill = [p for m in family.prefill_only_modules() for p in m.parameters()]
        assert len(prefill) == 2 * 2 * 2 and all(id(p) in cross for p in prefill)  # cross K/V weight + bias
        decode = {id(p) for m in family.decode_modules() for p in m.parameters()}
        assert id(family.model.model.decoder.embed_tokens.weight) not in decode  # a B-row lookup
        assert id(family.model.lm_head.weight) in decode and cross <= decode


@pytest.mark.parametrize("model_type", FAMILIES)
def test_full_heads_is_identity(model_type):
    model = make_seq2seq(model_type)
    assert model.config._attn_implementation == "sdpa"
    before = logits(model)
    converted = convert_to_gqa(copy.deepcopy(model), HEADS)
    assert converted.config._attn_implementation == ATTN_IMPLEMENTATION  # encoder too: the config is shared
    assert torch.equal(logits(converted), before)


@pytest.mark.parametrize("model_type", FAMILIES)
@pytest.mark.parametrize("kv_heads", [2, 1])
def test_grouped_equals_mha_with_pooled_heads(model_type, kv_heads):
    model = make_seq2seq(model_type)
    converted = convert_to_gqa(copy.deepcopy(model), kv_heads)
    attn = next(bart_decoder_attentions(converted))
    original = next(bart_decoder_attentions(model))
    assert original.k_proj.bias.abs().min() > 0  # the biases are not init's zeros: their pooling matters
    torch.testing.assert_close(
        attn.k_proj.bias, original.k_proj.bias.view(kv_heads, -1, WIDTH).mean(dim=1).flatten()
    )
    got = logits(converted)
    torch.testing.assert_close(got, logits(repeated(converted, model)), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(got, logits(model), atol=1e-3)  # pooling did change the decoder


@pytest.mark.parametrize("model_type", FAMILIES)
def test_encoder_untouched_and_cache_holds_kv_heads(model_type):
    model = make_seq2seq(model_type)
    converted = convert_to_gqa(copy.deepcopy(model), 2)
    enc_before, enc_after = model.model.encoder.state_dict(), converted.model.encoder.state_dict()
    assert enc_before.keys() == enc_after.keys()
    assert all(torch.equal(enc_before[k], enc_after[k]) for k in enc_before)
    with torch.no_grad():  # the encoder, routed through gqa_t5 by the shared config, runs SDPA exactly
        enc = converted(**BATCH).encoder_last_hidden_state
        assert torch.equal(enc, model(**BATCH).encoder_last_hidden_state)
    for layer in converted.model.encoder.layers:
        assert layer.self_attn.k_proj.weight.shape == (HEADS * WIDTH, DIM)
    for attn in bart_decoder_attentions(converted):
        for proj in (attn.k_proj, attn.v_proj):
            assert proj.weight.shape == (2 * WIDTH, DIM) and proj.bias.shape == (2 * WIDTH,)
    with torch.no_grad():
        dec = BATCH["decoder_input_ids"]
        prefill = converted(**{**BATCH, "decoder_input_ids": dec[:, :-1]}, use_cache=True)
        cache = returned_cache(prefill)
        b, s, t = dec.shape[0], BATCH["input_ids"].shape[1], dec.shape[1] - 1
        for layers, length in (
            (cache.self_attention_cache.layers, t),
            (cache.cross_attention_cache.layers, s),
        ):
            assert len(layers) == 2
            assert all(
                x.shape == (b, 2, length, WIDTH) for layer in layers for x in (layer.keys, layer.values)
            )
        cache_arg = (
            "cache" if "cache" in inspect.signature(converted.forward).parameters else "past_key_values"
        )
        step = converted(
            attention_mask=BATCH["attention_mask"],
            decoder_input_ids=dec[:, -1:],
            encoder_outputs=(prefill.encoder_last_hidden_state,),
            use_cache=True,
            **{cache_arg: cache},  # transformers 5.24 renamed past_key_values to cache
        )
    # a cached decode step (one query, G-head self cache, reused cross cache) = the full forward's last row
    torch.testing.assert_close(step.logits[:, -1], logits(converted)[:, -1], rtol=1e-5, atol=1e-5)
    assert cache.self_attention_cache.layers[0].keys.shape[2] == t + 1


@pytest.mark.parametrize("model_type", FAMILIES)
def test_save_reload_identical(tmp_path, model_type, t5_tokenizer):
    model = make_seq2seq(model_type)
    plain_dir, grouped_dir = tmp_path / "mha", tmp_path / "gqa"
    for out, m in ((plain_dir, model), (grouped_dir, convert_to_gqa(copy.deepcopy(model), 2))):
        m.save_pretrained(out)
        t5_tokenizer.save_pretrained(out)
    plain, _ = load_checkpoint(str(plain_dir))
    assert type(plain) is FAMILIES[model_type][1]  # an MHA checkpoint loads as it always did
    reloaded, _ = load_checkpoint(str(grouped_dir))
    assert "GQA" in type(reloaded).__name__ and reloaded.config.num_key_value_heads == 2
    assert reloaded.config._attn_implementation == ATTN_IMPLEMENTATION
    converted = convert_to_gqa(copy.deepcopy(model), 2)
    assert torch.equal(logits(reloaded), logits(converted))
    kw = {"input_ids": BATCH["input_ids"], "attention_mask": BATCH["attention_mask"], "max_new_tokens": 6}
    assert torch.equal(reloaded.generate(**kw, do_sample=False), converted.generate(**kw, do_sample=False))


def test_generation_equals_mha_with_pooled_heads():
    """Greedy decoding through both caches: the grouped model and its repeated-MHA reference agree."""
    model = make_seq2seq("mbart", std=0.1)
    converted = convert_to_gqa(copy.deepcopy(model), 2)
    kw = {"input_ids": BATCH["input_ids"], "attention_mask": BATCH["attention_mask"], "max_new_tokens": 8}
    got = converted.generate(**kw, do_sample=False)
    assert len(set(got[1].tolist())) > 3  # not one repeated token
    assert torch.equal(got, repeated(converted, model).generate(**kw, do_sample=False))
    static = converted.generate(**kw, do_sample=False, cache_implementation="static", max_cache_len=9,
                                disable_compile=True)  # fmt: skip
    assert torch.equal(static, got)


@pytest.mark.parametrize("method", CALIBRATED)
def test_calibrated_reshaping_keeps_logits(method):
    """aligned / clustered rotate and permute q/k/v weights and biases and out_proj's columns exactly."""
    model = make_seq2seq("bart")
    before = logits(model)
    family = family_of(model)
    src, dec = BATCH["input_ids"], BATCH["decoder_input_ids"]
    cal = [{"input_ids": src[i : i + 1], "labels": dec[i : i + 1]} for i in range(3)]
    assert family.alignment_refusal() is None
    orders = prepare_heads(family, 2, method, kv_statistics(family, cal))
    assert bool(orders) == method.startswith("clustered")  # the random heads do not group by index
    torch.testing.assert_close(logits(model), before, rtol=1e-4, atol=1e-4)
    converted = convert_to_gqa(make_seq2seq("bart"), 2, method=method, calibration=cal)
    assert converted.config.gqa_conversion[-1]["method"] == method


@pytest.mark.parametrize("model_type", FAMILIES)
def test_evaluate_end_to_end(compose_cfg, tmp_path, t5_tokenizer, model_type):
    """A checkpoint of each family converted on the fly by a run, and the same conversion saved and
    evaluated."""
    from gqa_eval.evaluate import evaluate
    from gqa_eval.variant.conversion import save_converted

    base = tmp_path / f"tiny_{model_type}"
    model = make_seq2seq(model_type, vocab=len(t5_tokenizer), std=0.1)
    model.save_pretrained(base)
    t5_tokenizer.save_pretrained(base)
    quick = ["task=wmt_en_de", "limit=2", "task.max_new_tokens=5", "task.max_input_tokens=60",
             f"base.path={base}", f"base.name=tiny_{model_type}"]  # fmt: skip
    result = evaluate(compose_cfg(["model=gqa2", *quick]), output_dir=tmp_path / "run")
    assert (result["arch"], result["n_heads"], result["kv_heads"]) == (model_type, HEADS, 2)
    assert result["kv_cache_bytes_per_token"] == 2 * 2 * 2 * WIDTH * 4  # layers x (K, V) x G x width x fp32
    assert result["kv_cache_bytes_per_token_measured"] == result["kv_cache_bytes_per_token"]
    cross = result["cross_kv_cache_bytes_per_source_token"]
    assert (
        cross
        == result["cross_kv_cache_bytes_per_source_token_measured"]
        == result["kv_cache_bytes_per_token"]
    )
    saved = tmp_path / "gqa2"
    loaded, tok = load_checkpoint(str(base))
    save_converted(convert_to_gqa(loaded, 2), tok, saved)
    saved_cfg = compose_cfg(["model=saved", f"model.checkpoint={saved}", *quick])
    again = evaluate(saved_cfg, output_dir=tmp_path / "b")
    assert again["kv_heads"] == 2
    preds = (tmp_path / "run/predictions.jsonl").read_text()
    assert preds == (tmp_path / "b/predictions.jsonl").read_text() and '"prediction": ""' not in preds
