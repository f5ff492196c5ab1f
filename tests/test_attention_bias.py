"""Variant stage, T5 part: the grouped attention's bias and mask handling (arXiv 2305.13245, sec. 2.2).

The grouped attention must equal plain softmax attention over K/V heads repeated per group, with T5's
relative position bias and the masks added, and must not copy a bias that is shared across the batch
into B copies, nor hand SDPA a mask where there is none.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from conftest import make_t5, repeated_t5

from gqa_eval.variant.attention import gqa_t5_attention_forward, grouped_attention
from gqa_eval.variant.conversion import convert_to_gqa

B, H, D = 3, 8, 4
MIN = torch.finfo(torch.float32).min


class FakeT5Attention(torch.nn.Module):
    """The attributes of transformers' ``T5Attention`` the attention function reads."""

    def __init__(self, kind: str):
        super().__init__()
        self.is_decoder = True
        self.is_causal = kind == "self"
        self.has_relative_attention_bias = kind == "self"


def reference(q, k, v, bias, keep):
    """Softmax attention in float64 with K/V repeated to H heads; ``keep`` is a boolean mask or None."""
    r = q.shape[1] // k.shape[1]
    k, v = (x.double().repeat_interleave(r, dim=1) for x in (k, v))  # (B, H, S, D)
    scores = q.double() @ k.transpose(-1, -2) + bias.double()  # (B, H, T, S), T5: no scaling
    if keep is not None:
        scores = scores.masked_fill(~keep, float("-inf"))
    return (scores.softmax(-1) @ v).transpose(1, 2)  # (B, T, H, D)


def t5_inputs(kind: str, t: int, padded: bool, g: int, seed: int = 0):
    """Query/K/V and the ``position_bias`` and mask transformers' T5 passes for this layer and step.

    Self-attention: a ``(1, H, T, S)`` relative bias in T5's permuted (non-contiguous) layout; the mask is
    None unless padded (transformers leaves causality to SDPA's flag then), else a boolean ``(B, 1, T, S)``.
    Cross-attention: a ``(1, H, T, S)`` bias of zeros; the encoder padding as a boolean ``(B, 1, T, S)``.
    Returns the inputs and the boolean keep-mask the reference applies.
    """
    gen = torch.Generator().manual_seed(seed)
    # self-attention, prefill: transformers passes no mask only without cached positions (S == T); the
    # padded case carries 2 cached positions
    s = (t + 2 * padded if t > 1 else 6) if kind == "self" else 11
    q = torch.randn(B, H, t, D, generator=gen)  # (B, H, T, D)
    k = torch.randn(B, g, s, D, generator=gen)  # (B, G, S, D)
    v = torch.randn(B, g, s, D, generator=gen)
    if kind == "self":
        position_bias = torch.randn(t, s, H, generator=gen).permute(2, 0, 1).unsqueeze(0)  # (1, H, T, S)
        keep = torch.ones(t, s, dtype=torch.bool).tril(diagonal=s - t).expand(B, 1, t, s)
    else:
        position_bias = torch.zeros(1, H, t, s)
        keep = torch.ones(B, 1, t, s, dtype=torch.bool)
    if padded:
        key_keep = torch.ones(B, s, dtype=torch.bool)
        key_keep[0, 4:] = False
        key_keep[2, 5:] = False
        keep = keep & key_keep[:, None, None, :]
    mask = keep.contiguous() if padded else None
    return (q, k, v, position_bias, mask), keep


@pytest.mark.parametrize("t", [5, 1], ids=["prefill", "decode"])
@pytest.mark.parametrize("g", [1, 2, H])
@pytest.mark.parametrize("padded", [False, True], ids=["unpadded", "padded"])
@pytest.mark.parametrize("kind", ["self", "cross"])
def test_grouped_attention_equals_repeated_kv_reference(kind, padded, g, t):
    (q, k, v, position_bias, mask), keep = t5_inputs(kind, t, padded, g)
    got, _ = gqa_t5_attention_forward(
        FakeT5Attention(kind), q, k, v, mask, scaling=1.0, position_bias=position_bias
    )
    want = reference(q, k, v, position_bias, keep)
    assert got.shape == (B, t, H, D)
    torch.testing.assert_close(got.double(), want, atol=2e-6, rtol=1e-5)


@pytest.mark.parametrize("bias_shape", [(1, H, 5, 7), (B, 1, 1, 7), (B, 1, 5, 7), (1, 1, 5, 7), (B, H, 5, 7)])
def test_grouped_attention_folds_every_broadcast_shape(bias_shape):
    """Bias and mask, in the shapes SDPA broadcasts, laid onto the folded queries without error."""
    gen = torch.Generator().manual_seed(2)
    q, k, v = (
        torch.randn(B, H, 5, D, generator=gen),
        torch.randn(B, 2, 7, D, generator=gen),
        torch.randn(B, 2, 7, D, generator=gen),
    )
    bias = torch.randn(bias_shape, generator=gen)
    pad = torch.zeros(B, 1, 1, 7).masked_fill_(torch.arange(7) >= 5, MIN)
    got = grouped_attention(q, k, v, bias, scaling=1.0, mask=pad)
    want = reference(q, k, v, bias + pad, None)
    torch.testing.assert_close(got.double(), want, atol=2e-6, rtol=1e-5)


def sdpa_masks(monkeypatch, kv_heads: int) -> list[torch.Tensor | None]:
    """Record the ``attn_mask`` of every SDPA call on ``kv_heads`` key/value heads (the grouped ones)."""
    seen, sdpa = [], F.scaled_dot_product_attention

    def spy(query, key, value, attn_mask=None, *args, **kwargs):
        if key.shape[1] == kv_heads:
            seen.append(attn_mask)
        return sdpa(query, key, value, attn_mask, *args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    return seen


def test_shared_bias_stays_batch_one_and_unpadded_cross_attention_gets_no_mask(monkeypatch):
    """Decoding an unpadded batch: self-attention's mask is the (1, H, 1, S) relative bias folded, never B
    copies; cross-attention, whose bias is zeros and which has no padding, gets no mask at all."""
    model = convert_to_gqa(make_t5(), 2)
    ids = torch.randint(3, 97, (B, 11), generator=torch.Generator().manual_seed(3))
    seen = sdpa_masks(monkeypatch, kv_heads=2)
    with torch.no_grad():
        model.generate(input_ids=ids, max_new_tokens=3, min_new_tokens=3, do_sample=False)
    assert len(seen) == 3 * 2 * 2  # steps x layers x (self, cross)
    self_masks, cross_masks = seen[0::2], seen[1::2]
    assert all(m is not None and m.shape[0] == 1 and m.shape[1] == 2 for m in self_masks), [
        None if m is None else tuple(m.shape) for m in self_masks
    ]
    assert all(m is None for m in cross_masks), [None if m is None else tuple(m.shape) for m in cross_masks]


def test_padded_cross_attention_gets_one_mask_row_per_example(monkeypatch):
    """With source padding, cross-attention's mask is the (B, 1, 1, S) padding, not (B, G, r, S)."""
    model = convert_to_gqa(make_t5(), 2)
    ids = torch.randint(3, 97, (B, 11), generator=torch.Generator().manual_seed(3))
    am = torch.ones_like(ids)
    am[0, 7:] = 0
    seen = sdpa_masks(monkeypatch, kv_heads=2)
    with torch.no_grad():
        model.generate(input_ids=ids, attention_mask=am, max_new_tokens=3, min_new_tokens=3, do_sample=False)
    assert [tuple(m.shape) for m in seen[1::2]] == [(B, 1, 1, 11)] * 6
    assert all(m.shape[0] == 1 for m in seen[0::2])


def eager(model):
    model = copy.deepcopy(model)
    for config in (model.config, model.encoder.config, model.decoder.config):
        config._attn_implementation = "eager"
    return model


@pytest.mark.parametrize("kv_heads", [1, 2, 4])
@pytest.mark.parametrize("padded", [False, True], ids=["unpadded", "padded"])
def test_converted_t5_equals_eager_mha_with_repeated_heads(batch, kv_heads, padded):
    """End to end, teacher-forced (prefill) and cached decoding: the converted model's logits equal
    transformers' eager T5 on the MHA model whose K/V heads repeat the pooled ones."""
    original = make_t5()
    converted = convert_to_gqa(copy.deepcopy(original), kv_heads)
    ref = eager(repeated_t5(converted, original))
    batch = dict(batch) if padded else {**batch, "attention_mask": None}
    with torch.no_grad():
        torch.testing.assert_close(converted(**batch).logits, ref(**batch).logits, atol=1e-5, rtol=1e-5)
        kwargs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"],
                  "max_new_tokens": 4, "min_new_tokens": 4, "do_sample": False,
                  "output_logits": True, "return_dict_in_generate": True}  # fmt: skip
        got, want = converted.generate(**kwargs), ref.generate(**kwargs)
    torch.testing.assert_close(got.sequences, want.sequences)
    torch.testing.assert_close(torch.stack(got.logits), torch.stack(want.logits), atol=1e-5, rtol=1e-5)


def test_t5_cross_attention_bias_is_zeros(monkeypatch):
    """Dropping cross-attention's bias relies on transformers' T5 passing zeros there."""
    import gqa_eval.variant.attention as attention

    biases, forward = [], attention.gqa_t5_attention_forward

    def spy(module, *args, position_bias=None, **kwargs):
        if not module.is_causal:
            biases.append(position_bias)
        return forward(module, *args, position_bias=position_bias, **kwargs)

    from transformers import AttentionInterface

    AttentionInterface.register(attention.ATTN_IMPLEMENTATION, spy)
    try:
        model = convert_to_gqa(make_t5(), 2)
        with torch.no_grad():
            model(input_ids=torch.randint(3, 97, (2, 9)), decoder_input_ids=torch.randint(3, 97, (2, 4)))
    finally:
        AttentionInterface.register(attention.ATTN_IMPLEMENTATION, forward)
    assert len(biases) == 2 and all(b is not None and not b.any() for b in biases)
