"""A static KV cache is sized for its own batch, so a step attends over what the roofline charges.

transformers keeps each static cache at least as long as the longest one built before on the model;
batches come longest first, so without a reset every later batch would attend over the first one's length.
"""

from __future__ import annotations

import pytest
from conftest import IdsTokenizer as _Ids
from conftest import make_decoder

from gqa_eval.decode_path import DecodePath
from gqa_eval.generation import generate
from gqa_eval.timing import Timer
from gqa_eval.variant.conversion import convert_to_gqa


@pytest.mark.parametrize("repeats", [1, 2])
def test_each_batch_gets_a_static_cache_of_its_own_length(repeats):
    model = convert_to_gqa(make_decoder(n_heads=4, kv_heads=4), 2).eval()
    inputs = [list(range(3, 3 + n)) for n in (14, 9, 4)]  # three lengths: three batches of one row
    new = 5
    timer = Timer(mode="fixed", repeats=repeats)
    generate(model, _Ids(), inputs, max_new_tokens=new, batch_size=1, timer=timer, progress=False,
             decode=DecodePath(static=True))  # fmt: skip
    widths = [b.input_tokens for b in timer.batches]
    assert sorted(widths, reverse=True) == [len(ids) for ids in inputs]
    assert [b.cache_tokens["self"] for b in timer.batches] == [w + new for w in widths]
