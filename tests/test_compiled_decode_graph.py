"""The compiled decode step of a decoder-only GQA model attends to its G key/value heads as they are.

transformers' SDPA function repeats K/V to H heads (``repeat_kv``) whenever it is compiled with a mask,
which a static cache always carries; ``gqa_decoder`` folds the queries instead. The decode step is compiled
as the project compiles it (:meth:`DecodePath.generate_kwargs`) but with a backend that only records the
FX graphs dynamo hands it, so the test runs in seconds on CPU.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import make_decoder

from gqa_eval.decode_path import decode_path
from gqa_eval.variant.attention import DECODER_ATTN_IMPLEMENTATION
from gqa_eval.variant.checkpoints import load_checkpoint
from gqa_eval.variant.conversion import convert_to_gqa

HEADS, HEAD_DIM = 4, 8  # hidden 32; the prompt (7) + new tokens (4) make a cache length unlike HEAD_DIM
COPIES = ("expand", "repeat", "repeat_interleave")


def _graphs(model) -> list[torch.fx.GraphModule]:
    """The FX graphs of ``model``'s compiled decode steps over a left-padded batch (a mask every step)."""
    graphs = []

    def record(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    ids = torch.randint(3, 90, (2, 7), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[0, :2] = 0
    kwargs = decode_path(True, "auto", "cpu", 1).generate_kwargs(ids.shape[1], 4, decoder_only=True)
    kwargs["compile_config"].backend = record
    torch._dynamo.reset()
    with torch.inference_mode():
        model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=4, do_sample=False, pad_token_id=0,
                       **kwargs)  # fmt: skip
    torch._dynamo.reset()
    return graphs


def _kv_copies(graphs: list[torch.fx.GraphModule]) -> int:
    """expand / repeat / repeat_interleave nodes whose result has a head's width last: K/V copied per head
    (the mask's and the rotary tables' expansions end in a cache length or 1)."""
    count = 0
    for gm in graphs:
        for node in gm.graph.nodes:
            name = getattr(node.target, "__name__", node.target)
            shape = getattr(node.meta.get("example_value"), "shape", None)
            if node.op in ("call_method", "call_function") and name in COPIES and shape is not None:
                count += shape[-1] == HEAD_DIM
    return count


def _attends(graphs: list[torch.fx.GraphModule]) -> bool:
    return any(n.target is F.scaled_dot_product_attention for gm in graphs for n in gm.graph.nodes)


@pytest.mark.parametrize("kv_heads", [1, 2])
def test_compiled_decode_step_does_not_repeat_kv(kv_heads):
    model = convert_to_gqa(make_decoder(n_heads=HEADS, kv_heads=HEADS), kv_heads).eval()
    assert model.config._attn_implementation == DECODER_ATTN_IMPLEMENTATION
    graphs = _graphs(model)
    assert graphs and _attends(graphs), "the decode step must have been compiled, attention included"
    assert _kv_copies(graphs) == 0
    # the count sees the copies where they are made: transformers' own SDPA function, compiled, repeats K/V
    model.config._attn_implementation = "sdpa"
    assert _kv_copies(_graphs(model)) == 2 * model.config.num_hidden_layers  # K and V, every layer


def test_loaded_gqa_checkpoint_is_routed_and_reloads_plainly(tmp_path):
    """A saved GQA checkpoint keeps no custom attention name: plain ``AutoModelForCausalLM`` loads it (as
    SDPA) and computes what :func:`load_checkpoint`'s routed model does at every real (unpadded) token."""
    from tokenizers import Tokenizer, models
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    model = convert_to_gqa(make_decoder(n_heads=HEADS, kv_heads=HEADS), 2)
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    tok = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="<unk>")), pad_token="<pad>",
        eos_token="</s>", unk_token="<unk>",
    )  # fmt: skip
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    assert DECODER_ATTN_IMPLEMENTATION not in (tmp_path / "config.json").read_text()
    routed, _ = load_checkpoint(str(tmp_path))
    plain = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert routed.config._attn_implementation == DECODER_ATTN_IMPLEMENTATION
    assert plain.config._attn_implementation == "sdpa"
    ids = torch.randint(3, 90, (2, 7), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[0, :3] = 0
    with torch.no_grad():
        logits = [m(input_ids=ids, attention_mask=mask).logits for m in (routed, plain)]
    real = mask.bool()  # a padding position's output is never read (and its all-masked row is undefined)
    torch.testing.assert_close(logits[0][real], logits[1][real])
