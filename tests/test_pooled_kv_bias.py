"""``pooled_kv`` pools the K/V projection biases as it pools their weights (Qwen2's q/k/v carry biases,
BART's every projection does), so a pooled training step runs exactly the mean-pooled GQA conversion."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import make_decoder
from test_families_seq2seq import BATCH, make_seq2seq

from gqa_eval import convert_to_gqa
from gqa_eval.training.pooled import pooled_kv
from gqa_eval.variant.family import family_of


def make_qwen2():
    model = make_decoder("qwen2", 8, 8).double()
    assert all(proj.bias is not None for proj in family_of(model).kv_projections())
    ids = torch.randint(3, 97, (2, 9), generator=torch.Generator().manual_seed(0))
    return model, {"input_ids": ids}


def make_bart():
    model = make_seq2seq("bart").double()
    assert all(proj.bias is not None for proj in family_of(model).kv_projections())
    return model, dict(BATCH)


MODELS = {"qwen2": make_qwen2, "bart": make_bart}


@pytest.mark.parametrize("groups", [2, 1])
@pytest.mark.parametrize("family", list(MODELS))
def test_pooled_kv_biases_are_group_means(family, groups):
    model, _ = MODELS[family]()
    fam = family_of(model)
    names = {id(p): n for n, p in model.named_parameters()}
    overrides = pooled_kv(model, groups)
    for proj in fam.kv_projections():
        name = names[id(proj.bias)]
        assert name in overrides, f"{name} not pooled"
        heads = proj.bias.detach().view(groups, fam.kv_heads // groups, fam.head_dim)
        expected = heads.mean(dim=1, keepdim=True).expand_as(heads).reshape(proj.bias.shape)
        assert torch.allclose(overrides[name], expected, atol=1e-12)
        assert overrides[name].shape == proj.bias.shape
    # and differentiable: the gradient reaches the MHA biases
    bias = fam.kv_projections()[0].bias
    overrides[names[id(bias)]].sum().backward()
    assert bias.grad is not None and torch.all(bias.grad != 0)


@pytest.mark.parametrize("groups", [2, 1])
@pytest.mark.parametrize("family", list(MODELS))
def test_pooled_kv_with_biases_runs_the_mean_pooled_conversion(family, groups):
    model, inputs = MODELS[family]()
    expected = convert_to_gqa(copy.deepcopy(model), groups)(**inputs).logits
    with torch.no_grad():
        got = torch.func.functional_call(model, pooled_kv(model, groups), args=(), kwargs=inputs).logits
        plain = model(**inputs).logits
    assert not torch.allclose(plain, expected, atol=1e-3)  # pooling matters on these models
    assert torch.allclose(got, expected, atol=1e-5)  # convert_to_gqa pools in float32
