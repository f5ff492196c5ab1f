"""Decoder-only answers end where the task says: a tiny Llama that never emits EOS stops at the task's stop
string and its prediction is cut there, in both timing modes; instruct tokenizers get their chat template."""

from __future__ import annotations

import pytest
import torch
from conftest import make_decoder, read_predictions
from transformers import AutoTokenizer, LlamaForCausalLM

from gqa_eval.evaluate import evaluate, use_chat_template
from gqa_eval.generation import cut_at_stop_strings, generate
from gqa_eval.paths import PROJECT_ROOT
from gqa_eval.tasks import encode, load_examples
from gqa_eval.timing import Timer

TOKENIZER = PROJECT_ROOT / "evals" / "checkpoints" / "tiny_llama"
MAX_NEW = 24


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(TOKENIZER)


def never_eos_llama(tokenizer, seed: int = 0) -> LlamaForCausalLM:
    """A random tiny Llama over the bundled tokenizer whose EOS logit is 0 while the best of its 4,000
    random logits is always positive: it never emits EOS, as a base model on a QA prompt often does not."""
    model = make_decoder(
        "llama", n_heads=4, kv_heads=4, seed=seed, vocab_size=len(tokenizer), max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    with torch.no_grad():
        model.lm_head.weight[tokenizer.eos_token_id] = 0.0
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def _prompts(tokenizer, n: int = 4) -> list[list[int]]:
    texts = [f"Question: what is item {i} of the list?\nAnswer:" for i in range(n)]
    return [tokenizer.encode(t) for t in texts]


def _stop_from_output(tokenizer, model, inputs) -> tuple[str, dict[int, str]]:
    """A stop string the model does produce: the text of row 0's fourth generated token."""
    timer = Timer(mode="fixed")
    full = generate(
        model, tokenizer, inputs, max_new_tokens=MAX_NEW, batch_size=4, timer=timer, progress=False
    )
    assert timer.summary()["generated_tokens"] == len(inputs) * MAX_NEW
    first = generate(
        model, tokenizer, inputs[:1], max_new_tokens=4, batch_size=1, timer=Timer(), progress=False
    )
    rest = full[0].removeprefix(first[0])
    stop = rest.strip().split()[0][:3] if rest.strip() else ""
    assert stop and stop in full[0], "the test needs a stop string inside row 0's output"
    return stop, full


def test_never_eos_model_runs_to_the_cap_without_stop_strings(tokenizer):
    model = never_eos_llama(tokenizer)
    timer = Timer(mode="natural")
    generate(model, tokenizer, _prompts(tokenizer), max_new_tokens=MAX_NEW, batch_size=4, timer=timer,
             progress=False)  # fmt: skip
    assert timer.summary()["generated_tokens"] == 4 * MAX_NEW  # what stop strings are for


@pytest.mark.parametrize("mode", ["natural", "fixed"])
def test_stop_string_ends_generation_and_cuts_prediction(tokenizer, mode):
    model = never_eos_llama(tokenizer)
    inputs = _prompts(tokenizer)
    stop, full = _stop_from_output(tokenizer, model, inputs)
    timer = Timer(mode=mode)
    got = generate(
        model,
        tokenizer,
        inputs,
        max_new_tokens=MAX_NEW,
        batch_size=1,
        timer=timer,
        progress=False,
        stop_strings=[stop],
    )  # fmt: skip (one row a batch: row 0's batch ends with row 0)
    assert got == {i: cut_at_stop_strings(t, [stop]).strip() for i, t in full.items()}
    assert all(stop not in p for p in got.values())
    assert len(got[0]) < len(full[0])
    tokens = timer.summary()["generated_tokens"]
    if mode == "natural":  # generation itself stopped early: fewer steps, fewer tokens
        assert tokens < 4 * MAX_NEW and min(len(b.steps) for b in timer.batches) < MAX_NEW - 1
    else:  # fixed work: every row decodes the cap, the prediction is cut afterwards
        assert tokens == 4 * MAX_NEW


def test_cut_at_stop_strings_takes_the_first_of_several():
    assert cut_at_stop_strings("Paris\nQuestion: x\n\nmore", ["\n\n", "\n"]) == "Paris"
    assert cut_at_stop_strings("no stop here", ["\n"]) == "no stop here"
    assert cut_at_stop_strings("a.b", []) == "a.b"


def test_evaluate_applies_the_task_stop_strings(tokenizer, tmp_path, compose_cfg):
    model = never_eos_llama(tokenizer, seed=1)
    ckpt = tmp_path / "never_eos"
    model.save_pretrained(ckpt)
    tokenizer.save_pretrained(ckpt)
    overrides = [f"base.path={ckpt}", "base.name=never_eos", "task=trivia_qa", "limit=3",
                 "timing.roofline=false", "task.max_input_tokens=96"]  # fmt: skip
    unstopped = evaluate(compose_cfg([*overrides, "task.stop_strings=[]"]), output_dir=tmp_path / "full")
    assert unstopped["timing"]["generated_tokens"] == 3 * 32  # no EOS, no stop string: the length cap
    full = read_predictions(tmp_path / "full")
    stop = full[0]["prediction"].split()[1][:3]  # a string the model does produce
    cfg = compose_cfg(overrides)
    cfg.task.stop_strings = [stop]
    result = evaluate(cfg, output_dir=tmp_path / "run")
    assert result["stop_strings"] == [stop] and result["chat_template"] is False
    rows = read_predictions(tmp_path / "run")
    by_id = {r["id"]: r["prediction"] for r in full}
    assert {r["id"]: r["prediction"] for r in rows} == {
        i: cut_at_stop_strings(p, [stop]).strip() for i, p in by_id.items()
    }
    assert result["timing"]["generated_tokens"] < 3 * 32
    assert result["metrics"] != unstopped["metrics"] or rows != full


CHAT = "{% for m in messages %}{{ m['role'] | upper }}: {{ m['content'] }}\n{% endfor %}ASSISTANT:"


def test_chat_template_wraps_the_prompt_and_survives_truncation(tokenizer, compose_cfg):
    chat_tok = AutoTokenizer.from_pretrained(TOKENIZER)
    chat_tok.chat_template = CHAT
    cfg = compose_cfg(["task=cnn_dm", "limit=2"])
    task = {**cfg.task, "max_input_tokens": 200}  # the bundled articles are longer: truncation happens
    examples = load_examples(task, 2)
    ids = encode(task, examples, chat_tok, decoder_only=True, chat_template=True)
    prompt = task["prompt_template"].format(**examples[0].fields)
    expected = chat_tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                            add_generation_prompt=True)  # fmt: skip
    text = chat_tok.decode(ids[0])
    assert text.startswith("USER: Summarize") and text.endswith("Summary:\nASSISTANT:")
    assert len(ids[0]) <= task["max_input_tokens"] < len(chat_tok.encode(expected, add_special_tokens=False))
    assert encode(task, examples, chat_tok, decoder_only=True)[0] != ids[0]


def test_chat_template_setting(tokenizer, compose_cfg):
    chat_tok = AutoTokenizer.from_pretrained(TOKENIZER)
    chat_tok.chat_template = CHAT
    auto = compose_cfg([])
    assert use_chat_template(auto, chat_tok, decoder_only=True) is True
    assert use_chat_template(auto, chat_tok, decoder_only=False) is False  # seq2seq: the T5 input template
    assert use_chat_template(auto, tokenizer, decoder_only=True) is False  # a base model: no template
    assert use_chat_template(compose_cfg(["base.chat_template=false"]), chat_tok, decoder_only=True) is False
    with pytest.raises(ValueError, match="has no chat template"):
        use_chat_template(compose_cfg(["base.chat_template=true"]), tokenizer, decoder_only=True)
