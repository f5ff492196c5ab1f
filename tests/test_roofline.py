"""The roofline count of a decode step, derived by hand from a tiny config's dimensions.

The expected bytes and FLOPs are written out here from what a decode step runs, never read off the
implementation. Dimensions are all different (d_model != H x d_kv, decoder layers != encoder layers), so
a formula that mixes two of them up fails.

A T5 decode step (one new token for each of B rows) reads, per decoder layer: self-attention q, k, v, o
(k and v for the new token, G heads), cross-attention q and o (its k and v ran once at prefill on the
encoder output; the step reads their output from the cache), the FFN, three layer norms; once: the
relative position bias table (block 0, looked up for the new position every step), the final norm and
the LM head; and the KV cache, G heads over the self positions so far and the source positions. A Llama
step reads q, k, v, o, the gated MLP, two norms a layer, the final norm, the LM head and its one cache.
FLOPs: 2 x B per multiplied weight, plus QK^T and AV, 2 x B x H x head_dim x positions each.
"""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, T5Config, T5ForConditionalGeneration

from gqa_eval import roofline
from gqa_eval.timing import BatchTiming
from gqa_eval.variant.conversion import convert_to_gqa

D_MODEL, D_FF, VOCAB, LAYERS = 24, 40, 50, 3
HEADS, D_KV = 4, 5  # T5: inner dimension H x d_kv = 20
BUCKETS = 16  # T5's relative position buckets
HEAD_DIM = 8  # Llama: H x head_dim = 32
BATCH, SELF_POSITIONS, SOURCE_POSITIONS = 3, 7, 11


def t5(gated: bool) -> T5ForConditionalGeneration:
    """transformers >= 5 ties T5's LM head to the embedding whatever ``tie_word_embeddings`` says."""
    config = T5Config(
        vocab_size=VOCAB, d_model=D_MODEL, d_kv=D_KV, d_ff=D_FF, num_heads=HEADS,
        num_layers=2, num_decoder_layers=LAYERS, relative_attention_num_buckets=BUCKETS,
        feed_forward_proj="gated-gelu" if gated else "relu", dropout_rate=0.0,
        pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
    )  # fmt: skip
    return T5ForConditionalGeneration(config).eval()


def llama(tied: bool = False) -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=VOCAB, hidden_size=D_MODEL, intermediate_size=D_FF, num_hidden_layers=LAYERS,
        num_attention_heads=HEADS, num_key_value_heads=HEADS, head_dim=HEAD_DIM,
        max_position_embeddings=64, tie_word_embeddings=tied, pad_token_id=0, bos_token_id=2, eos_token_id=1,
    )  # fmt: skip
    return LlamaForCausalLM(config).eval()


def t5_by_hand(kv_heads: int, gated: bool) -> dict[str, int]:
    """Weights a T5 decode step multiplies by and the others it reads, per the module docstring."""
    q = o = D_MODEL * HEADS * D_KV
    k = v = D_MODEL * kv_heads * D_KV  # the new token's K/V, G heads
    self_attention = q + k + v + o
    cross_attention = q + o  # k, v: cached at prefill
    ffn = D_MODEL * D_FF * (3 if gated else 2)  # wi_0, wi_1, wo | wi, wo
    lm_head = D_MODEL * VOCAB  # tied or not, read once
    matmul = LAYERS * (self_attention + cross_attention + ffn) + lm_head
    norms = LAYERS * 3 * D_MODEL + D_MODEL  # self, cross, FFN norms a layer; final norm
    bias_table = BUCKETS * HEADS
    return {
        "matmul": matmul,
        "read": matmul + norms + bias_table,
        "prefill_only": LAYERS * 2 * D_MODEL * kv_heads * D_KV,
        "kv_per_position": LAYERS * 2 * kv_heads * D_KV,  # K and V, G heads, each cache
        "attention_flops_per_position": LAYERS * 2 * 2 * HEADS * D_KV,  # QK^T and AV, H query heads
    }


def llama_by_hand(kv_heads: int) -> dict[str, int]:
    q = o = D_MODEL * HEADS * HEAD_DIM
    k = v = D_MODEL * kv_heads * HEAD_DIM  # projected for the new token every step
    mlp = 3 * D_MODEL * D_FF  # gate, up, down
    matmul = LAYERS * (q + k + v + o + mlp) + D_MODEL * VOCAB
    norms = LAYERS * 2 * D_MODEL + D_MODEL
    return {
        "matmul": matmul,
        "read": matmul + norms,
        "prefill_only": 0,
        "kv_per_position": LAYERS * 2 * kv_heads * HEAD_DIM,
        "attention_flops_per_position": LAYERS * 2 * 2 * HEADS * HEAD_DIM,
    }


CASES = {
    "t5-gated": (lambda: t5(gated=True), lambda g: t5_by_hand(g, gated=True)),
    "t5-relu": (lambda: t5(gated=False), lambda g: t5_by_hand(g, gated=False)),
    "llama": (llama, llama_by_hand),
    "llama-tied": (lambda: llama(tied=True), llama_by_hand),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("kv_heads", [4, 2, 1])
@pytest.mark.parametrize("case", list(CASES))
def test_decode_step_cost_by_hand(case, kv_heads, dtype):
    make, by_hand = CASES[case]
    model = convert_to_gqa(make(), kv_heads).to(dtype)
    hand = by_hand(kv_heads)
    nbytes = 4 if dtype == torch.float32 else 2
    source = SOURCE_POSITIONS if case.startswith("t5") else 0
    positions = SELF_POSITIONS + source  # self cache + cross cache (T5)

    assert roofline.decode_params(model) == (hand["read"], hand["read"] * nbytes)
    assert roofline.prefill_only_params(model) == (hand["prefill_only"], hand["prefill_only"] * nbytes)
    cost = roofline.decode_step_cost(model, BATCH, SELF_POSITIONS, source)
    kv_bytes = hand["kv_per_position"] * nbytes * BATCH * positions
    assert cost["bytes"] == hand["read"] * nbytes + kv_bytes
    attention_flops = hand["attention_flops_per_position"] * BATCH * positions
    assert cost["flops"] == 2 * hand["matmul"] * BATCH + attention_flops


@pytest.mark.parametrize("gated", [True, False])
def test_t5_decode_and_prefill_weights_cover_the_decoder(gated):
    """Every decoder-side weight is counted once, in decode or in prefill, except an untied embedding."""
    model = convert_to_gqa(t5(gated), 2)
    decoder = {id(p): p.numel() for m in (model.decoder, model.lm_head) for p in m.parameters()}
    embedding = model.decoder.embed_tokens.weight
    embedding = 0 if embedding is model.lm_head.weight else embedding.numel()
    n_decode, _ = roofline.decode_params(model)
    n_prefill, _ = roofline.prefill_only_params(model)
    assert n_decode + n_prefill + embedding == sum(decoder.values())


def test_decode_floor_uses_the_mean_step_positions():
    """n later steps attend over 1 + k (T5: start token + k generated) or prompt + k positions, k = 1..n."""
    rates = {"memory_bytes_per_s": 1e9, "matmul_flops_per_s": 1e15}  # memory-bound
    steps = [0.5, 0.25, 0.75, 0.25]  # n = 4: mean k = 2.5; median 0.375 s
    for model, self_positions, source in (
        (t5(gated=True), 1 + 2.5, SOURCE_POSITIONS),
        (llama(), SOURCE_POSITIONS + 2.5, 0),
    ):
        batch = BatchTiming(seconds=3.0, samples=BATCH, steps=steps, input_tokens=SOURCE_POSITIONS)
        floor = roofline.decode_floor(model, [batch], rates)
        expected = roofline.decode_step_cost(model, BATCH, self_positions, source)["bytes"] / 1e9
        assert floor["decode_floor_s_per_step"] == pytest.approx(expected)
        assert floor["decode_floor_ratio"] == pytest.approx(0.375 / expected)
        assert floor["decode_bound"] == "memory"


def test_floor_is_the_larger_term():
    cost = {"bytes": 4e6, "flops": 3e9}
    assert roofline.floor_seconds(cost, {"memory_bytes_per_s": 1e9, "matmul_flops_per_s": 1e12}) == (
        pytest.approx(4e-3),
        "memory",
    )
    assert roofline.floor_seconds(cost, {"memory_bytes_per_s": 1e10, "matmul_flops_per_s": 1e12}) == (
        pytest.approx(3e-3),
        "compute",
    )
