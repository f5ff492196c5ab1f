"""Presets for real fine-tuned checkpoints (conf/base/, conf/finetuned/, +experiment=finetuned): each
composes with its hub id, revision and input style; raw-style bases read the bare input field, mBART-50's
languages set the source code and force the target one, the chat presets build prompts through the chat
template, generation ignores a checkpoint's own search settings, and the experiment expands to each base
on its own task x MHA / GQA-8 / MQA. No hub: the loading logic runs on tiny local tokenizers and models
of the same form."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from conftest import CONF_DIR, compose_config, spread_weights, task_cfg
from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf
from transformers import AutoTokenizer

from gqa_eval import tasks
from gqa_eval.evaluate import evaluate, use_chat_template
from gqa_eval.generation import generate
from gqa_eval.paths import PROJECT_ROOT
from gqa_eval.timing import Timer

TINY = PROJECT_ROOT / "evals" / "checkpoints"
# preset -> (hub id, input_template, max_input_tokens, src_lang, tgt_lang, chat_template)
PRESETS = {
    "bart_large_cnn": ("facebook/bart-large-cnn", "raw", 1024, None, None, "auto"),
    "pegasus_cnn_dm": ("google/pegasus-cnn_dailymail", "raw", 1024, None, None, "auto"),
    "pegasus_arxiv": ("google/pegasus-arxiv", "raw", 1024, None, None, "auto"),
    "pegasus_pubmed": ("google/pegasus-pubmed", "raw", 1024, None, None, "auto"),
    "pegasus_multi_news": ("google/pegasus-multi_news", "raw", 1024, None, None, "auto"),
    "opus_mt_en_de": ("Helsinki-NLP/opus-mt-en-de", "raw", 512, None, None, "auto"),
    "mbart50_en_de": ("facebook/mbart-large-50-one-to-many-mmt", "raw", 1024, "en_XX", "de_DE", "auto"),
    "qwen1_5_1_8b_chat": ("Qwen/Qwen1.5-1.8B-Chat", None, None, None, None, True),
    "llama2_7b_chat": ("meta-llama/Llama-2-7b-chat-hf", None, None, None, None, True),
}
# pairing (conf/finetuned/) -> the task its base suits
PAIRS = {
    "bart_large_cnn": "cnn_dm",
    "pegasus_cnn_dm": "cnn_dm",
    "pegasus_arxiv": "arxiv",
    "pegasus_pubmed": "pubmed",
    "pegasus_multi_news": "multi_news",
    "opus_mt_en_de": "wmt_en_de",
    "mbart50_en_de": "wmt_en_de",
    "flan_t5_large": "mediasum",
    "qwen1_5_1_8b_chat": "trivia_qa",
    "llama2_7b_chat": "trivia_qa",
}
SWEPT = [p for p in PAIRS if p != "llama2_7b_chat"]  # the gated 7B model is added by hand
DOC = "In the first round the council met. " * 3 + "The vote came late."
ChatML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def base_cfg(name: str):
    return compose_config("config", [f"base={name}"]).base


@pytest.fixture(scope="module")
def t5_tok():
    return AutoTokenizer.from_pretrained(TINY / "tiny_t5")


@pytest.fixture
def mbart_tok():
    """A real MBart50Tokenizer over a tiny Unigram vocabulary that holds the fairseq language codes, its
    source language another than the preset's."""
    from transformers import MBart50Tokenizer
    from transformers.models.mbart50.tokenization_mbart50 import FAIRSEQ_LANGUAGE_CODES

    words = "▁the ▁council ▁met ▁in ▁first ▁round ▁vote ▁came ▁late ▁hello . ▁a".split()
    vocab = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    vocab += [(w, -1.0) for w in words] + [(c, -3.0) for c in "abcdefghijklmnopqrstuvwxyzTI"]
    vocab += [(code, 0.0) for code in FAIRSEQ_LANGUAGE_CODES] + [("<mask>", 0.0)]
    return MBart50Tokenizer(vocab=vocab, src_lang="fr_XX")


# --- the presets compose ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_composes_with_hub_id_revision_and_input_style(name):
    hub, template, cap, src, tgt, chat = PRESETS[name]
    base = base_cfg(name)
    assert base.name == name and base.path == hub and base.revision == "main"
    assert re.fullmatch(r"[\w.-]+/[\w.-]+", base.path)  # a hub id, not a local path
    assert base.allow_pickle is False and base.trust_remote_code is False
    assert (base.input_template, base.max_input_tokens) == (template, cap)
    assert (base.src_lang, base.tgt_lang) == (src, tgt)
    assert base.chat_template == chat
    assert base.newline_token == ("<n>" if name.startswith("pegasus") else None)


def test_every_new_preset_is_listed_here():
    """A preset added to conf/base/ with an input style must be tested above (and documented)."""
    styled = {
        p.stem for p in (Path(CONF_DIR) / "base").glob("*.yaml") if "input_template" in OmegaConf.load(p)
    }
    assert styled == set(PRESETS)


@pytest.mark.parametrize("pairing", sorted(PAIRS))
def test_pairing_sets_the_base_and_its_task(pairing):
    cfg = compose_config("config", [f"+finetuned={pairing}", "model=gqa8"])
    assert (cfg.base.name, cfg.task.name, cfg.model.name) == (pairing, PAIRS[pairing], "gqa8")
    assert {p.stem for p in (Path(CONF_DIR) / "finetuned").glob("*.yaml")} == set(PAIRS)


def sweep_jobs(overrides: list[str]) -> list[list[str]]:
    """The jobs a multirun ``gqa-eval -m OVERRIDES`` launches: the experiment's sweeper params and the
    command line, parsed and expanded as Hydra's BasicSweeper does (``sweep()`` without the launcher)."""
    plain = [o for o in overrides if "," not in o]  # the sweeper's params come from the config itself
    hydra_cfg = compose_config("config", plain, return_hydra_config=True).hydra
    params = [f"{k}={v}" for k, v in hydra_cfg.sweeper.params.items()]  # as BasicSweeper._parse_config
    parsed = OverridesParser.create().parse_overrides([*params, *overrides])
    return [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


def test_experiment_expands_to_each_base_on_its_own_task_times_mha_gqa8_mqa():
    jobs = sweep_jobs(["+experiment=finetuned"])
    runs = []
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(version_base="1.3", config_dir=CONF_DIR):
            for job in jobs:  # a job holds the whole command line, as Hydra composes it
                cfg = compose("config", overrides=job)
                runs.append((cfg.base.name, cfg.task.name, cfg.model.name, cfg.model.kv_heads))
    finally:
        GlobalHydra.instance().clear()
    expected = {(b, PAIRS[b], m, kv) for b in SWEPT for m, kv in (("mha", None), ("gqa8", 8), ("mqa", 1))}
    assert len(runs) == 27 and set(runs) == expected
    # run directories are <base>_<model>_<task>: one per run
    assert len({f"{b}_{m}_{t}" for b, t, m, _ in runs}) == 27
    # the command line narrows the pairings
    some = sweep_jobs(["+experiment=finetuned", "+finetuned=pegasus_arxiv,opus_mt_en_de"])
    assert len(some) == 6 and {j for job in some for j in job if j.startswith("+finetuned")} == {
        "+finetuned=pegasus_arxiv",
        "+finetuned=opus_mt_en_de",
    }


# --- input building -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["bart_large_cnn", "pegasus_cnn_dm", "opus_mt_en_de"])
def test_raw_style_reads_the_input_field_alone(t5_tok, name):
    task_name = PAIRS[name]
    task = tasks.task_for_base(task_cfg(task_name), base_cfg(name))
    field = tasks.input_fields(task)[0]
    ex = tasks.Example(id="x", fields={field: DOC}, references=["r"])
    ids = tasks.encode(task, [ex], t5_tok, decoder_only=False)[0]
    assert ids == t5_tok.encode(DOC)  # the document and the tokenizer's own EOS, no prefix
    assert t5_tok.decode(ids, skip_special_tokens=True) == DOC
    # the task's T5 template is what a FLAN base (input_template absent) still gets
    flan = tasks.task_for_base(task_cfg(task_name), base_cfg("flan_t5_large"))
    plain = tasks.encode(flan, [ex], t5_tok, False)
    prefix = task_cfg(task_name)["input_template"].split("{")[0]
    assert t5_tok.decode(plain[0], skip_special_tokens=True) == prefix + DOC


def test_raw_style_truncates_to_the_checkpoints_position_table(t5_tok):
    task = tasks.task_for_base(task_cfg("arxiv"), base_cfg("pegasus_arxiv"))
    assert task["max_input_tokens"] == 1024  # the paper's 2048 is past Pegasus's 1024 positions
    assert tasks.task_for_base(task_cfg("cnn_dm"), base_cfg("pegasus_cnn_dm"))["max_input_tokens"] == 512
    long = tasks.Example("y", {"document": " ".join(f"w{i}" for i in range(3000))}, ["r"])
    ids = tasks.encode(task, [long], t5_tok, False)[0]
    assert len(ids) <= 1024 and t5_tok.decode(ids, skip_special_tokens=True).startswith("w0 w1 w2")
    # MediaSum's dialogue is the one field {document}
    mediasum = tasks.task_for_base(task_cfg("mediasum"), base_cfg("bart_large_cnn"))
    assert mediasum["input_template"] == "{document}"


def test_input_template_values_are_checked_against_the_task():
    with pytest.raises(tasks.TaskDataError, match=r"=raw .* trivia_qa has 2 \(question, context\)"):
        tasks.task_for_base(task_cfg("trivia_qa"), {"input_template": "raw"})
    custom = tasks.task_for_base(task_cfg("wmt_en_de"), {"input_template": ">>de<< {source}"})
    assert custom["input_template"] == custom["prompt_template"] == ">>de<< {source}"
    with pytest.raises(tasks.TaskDataError, match=r"names article"):
        tasks.task_for_base(task_cfg("cnn_dm"), {"input_template": "{article}"})
    with pytest.raises(tasks.TaskDataError, match=r"including \{context\}"):
        tasks.task_for_base(task_cfg("trivia_qa"), {"input_template": "question: {question}"})
    with pytest.raises(tasks.TaskDataError, match="max_input_tokens must be"):
        tasks.task_for_base(task_cfg("cnn_dm"), {"max_input_tokens": 0})
    assert tasks.task_for_base(task_cfg("cnn_dm"), {}) == task_cfg("cnn_dm")  # presets without the keys


def test_mbart_languages_set_the_source_code_and_force_the_target(mbart_tok):
    base = base_cfg("mbart50_en_de")
    forced = tasks.set_languages(mbart_tok, base)
    assert forced == mbart_tok.convert_tokens_to_ids("de_DE") and forced != mbart_tok.unk_token_id
    task = tasks.task_for_base(task_cfg("wmt_en_de"), base)
    ids = tasks.encode(task, [tasks.Example("x", {"source": "the council met"}, ["r"])], mbart_tok, False)[0]
    en = mbart_tok.convert_tokens_to_ids("en_XX")
    assert ids[0] == en and ids[-1] == mbart_tok.eos_token_id  # "en_XX the council met </s>"
    assert mbart_tok.decode(ids, skip_special_tokens=True) == "the council met"
    # another source language is another first token
    assert tasks.set_languages(mbart_tok, {"src_lang": "ro_RO", "tgt_lang": "de_DE"}) == forced
    assert mbart_tok.encode("a")[0] == mbart_tok.convert_tokens_to_ids("ro_RO")


def test_language_settings_are_refused_where_they_cannot_work(t5_tok, mbart_tok):
    assert tasks.set_languages(t5_tok, base_cfg("opus_mt_en_de")) is None  # a single-pair model: no code
    with pytest.raises(ValueError, match="base.tgt_lang='xx_YY'.*no such token"):
        tasks.set_languages(mbart_tok, {"src_lang": "en_XX", "tgt_lang": "xx_YY"})
    with pytest.raises(ValueError, match="base.src_lang='</s>'.*does not write a source language"):
        tasks.set_languages(t5_tok, {"src_lang": "</s>"})  # a token it has, on a tokenizer without codes


def tiny_mbart(tokenizer, seed: int = 0):
    from transformers import MBartConfig, MBartForConditionalGeneration

    config = MBartConfig(
        vocab_size=len(tokenizer), d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=0,
        decoder_start_token_id=tokenizer.eos_token_id, forced_eos_token_id=None,
    )  # fmt: skip
    torch.manual_seed(seed)
    return spread_weights(MBartForConditionalGeneration(config), seed=seed)


def recording(model) -> list:
    """Wrap ``model.generate`` to keep each call's output sequences."""
    seen, original = [], model.generate

    def wrapped(*args, **kwargs):
        out = original(*args, **kwargs)
        seen.append(out.sequences)
        return out

    model.generate = wrapped
    return seen


def test_generation_starts_with_the_target_language(mbart_tok):
    model = tiny_mbart(mbart_tok)
    forced = tasks.set_languages(mbart_tok, base_cfg("mbart50_en_de"))
    inputs = [mbart_tok.encode("the council met"), mbart_tok.encode("the vote came late")]
    seen = recording(model)
    generate(model, mbart_tok, inputs, max_new_tokens=5, batch_size=2, timer=Timer(), progress=False,
             forced_bos_token_id=forced)  # fmt: skip
    assert seen and all((s[:, 1] == forced).all() for s in seen)  # after the decoder start </s>
    seen.clear()
    generate(model, mbart_tok, inputs, max_new_tokens=5, batch_size=2, timer=Timer(), progress=False)
    assert not all((s[:, 1] == forced).all() for s in seen)  # the random model does not pick it itself


def test_generation_is_greedy_whatever_the_checkpoints_generation_config(mbart_tok):
    """BART / Pegasus generation_config.json carries beam search, min_length, no_repeat_ngram_size...:
    none of it may reach generate(), or the 'greedy' predictions and their timing would be its search."""
    plain, leaky = tiny_mbart(mbart_tok), tiny_mbart(mbart_tok)
    leaky.generation_config.update(
        num_beams=4, min_length=12, no_repeat_ngram_size=1, repetition_penalty=5.0, length_penalty=2.0,
        early_stopping=True, forced_eos_token_id=mbart_tok.eos_token_id, encoder_no_repeat_ngram_size=1,
    )  # fmt: skip
    inputs = [mbart_tok.encode("the council met in the first round"), mbart_tok.encode("hello")]
    run = {"max_new_tokens": 12, "batch_size": 2, "progress": False}
    for mode in ("natural", "fixed"):
        expected = generate(plain, mbart_tok, inputs, timer=Timer(mode=mode), **run)
        assert generate(leaky, mbart_tok, inputs, timer=Timer(mode=mode), **run) == expected
    # the checkpoint's forced first token (BART's <s>) is not a search setting: it stays
    en = mbart_tok.convert_tokens_to_ids("en_XX")
    plain.generation_config.forced_bos_token_id = en
    seen = recording(plain)
    generate(plain, mbart_tok, inputs, timer=Timer(), **run)
    assert all((s[:, 1] == en).all() for s in seen)


def test_newline_token_becomes_a_newline(mbart_tok):
    class Writes:  # the tokenizer, decoding what Pegasus writes for a line break
        def __getattr__(self, name):
            return getattr(mbart_tok, name)

        def batch_decode(self, rows, **kwargs):
            return ["First line.<n>Second line." for _ in rows]

    model, inputs = tiny_mbart(mbart_tok), [mbart_tok.encode("hello")]
    got = generate(model, Writes(), inputs, max_new_tokens=3, batch_size=1, timer=Timer(), progress=False,
                   newline_token="<n>")  # fmt: skip
    assert got == {0: "First line.\nSecond line."}
    kept = generate(model, Writes(), inputs, max_new_tokens=3, batch_size=1, timer=Timer(), progress=False)
    assert kept == {0: "First line.<n>Second line."}


@pytest.fixture
def chat_tok(tmp_path):
    """The bundled tiny Llama's tokenizer, saved with a ChatML chat template (as Qwen's instruct models)."""
    tok = AutoTokenizer.from_pretrained(TINY / "tiny_llama")
    tok.chat_template = ChatML
    tok.save_pretrained(tmp_path / "chat")
    return AutoTokenizer.from_pretrained(tmp_path / "chat")


@pytest.mark.parametrize("name", ["qwen1_5_1_8b_chat", "llama2_7b_chat"])
def test_chat_preset_builds_prompts_through_the_chat_template(chat_tok, name):
    cfg = compose_config("config", [f"+finetuned={name}"])
    assert use_chat_template(cfg, chat_tok, decoder_only=True) is True
    task = tasks.task_for_base(OmegaConf.to_container(cfg.task, resolve=True), cfg.base)
    ex = tasks.Example("q", {"question": "Who met?", "context": "The council met."}, ["council"])
    ids = tasks.encode(task, [ex], chat_tok, decoder_only=True, chat_template=True)[0]
    prompt = task["prompt_template"].format(**ex.fields)
    expected = f"<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n"
    assert ids == chat_tok.encode(expected, add_special_tokens=False)
    # chat_template: true refuses a tokenizer that has none instead of writing a plain prompt
    with pytest.raises(ValueError, match="has no chat template"):
        use_chat_template(cfg, AutoTokenizer.from_pretrained(TINY / "tiny_llama"), decoder_only=True)


# --- the base's input style reaches a run -------------------------------------------------------------


def test_evaluate_writes_the_bases_input_style(tmp_path):
    """``base.input_template`` / ``max_input_tokens`` on the bundled tiny T5: the run's inputs are the bare
    articles, cut to the cap, and result.json says so."""
    cfg = compose_config(
        "config",
        [f"output_root={tmp_path}", "progress=false", "limit=2", "task.max_new_tokens=2",
         "timing.roofline=false", "+base.input_template=raw", "+base.max_input_tokens=24"],
    )  # fmt: skip
    result = evaluate(cfg, output_dir=tmp_path / "run")
    rows = [json.loads(line) for line in (tmp_path / "run" / "predictions.jsonl").read_text().splitlines()]
    articles = [ex.fields["document"] for ex in tasks.load_examples(task_cfg("cnn_dm"), 2)]
    assert result["max_input_tokens"] == 24 and len(rows) == 2
    for row in rows:
        assert not row["input"].startswith("summarize:")
        assert articles[row["index"]].startswith(row["input"][:40]) and len(row["input"]) < 200


def test_mbart_preset_runs_on_a_local_copy_of_the_same_form(tmp_path, mbart_tok, monkeypatch):
    """+finetuned=mbart50_en_de with base.path at a tiny local mBART-50 whose saved tokenizer defaults to
    another source language: every input is "en_XX <source> </s>", generation starts with de_DE."""
    import gqa_eval.evaluate as evaluate_module

    tiny_mbart(mbart_tok).save_pretrained(tmp_path / "mbart")
    mbart_tok.save_pretrained(tmp_path / "mbart")
    calls = []

    def recording_generate(model, tokenizer, inputs, **kwargs):
        calls.append((inputs, kwargs))
        return generate(model, tokenizer, inputs, **kwargs)

    monkeypatch.setattr(evaluate_module, "generate", recording_generate)
    cfg = compose_config(
        "config",
        [f"output_root={tmp_path}", "progress=false", "+finetuned=mbart50_en_de", "limit=2",
         f"base.path={tmp_path / 'mbart'}", "task.max_new_tokens=3", "timing.roofline=false",
         "base.max_input_tokens=48"],
    )  # fmt: skip
    result = evaluate(cfg, output_dir=tmp_path / "run")
    assert (result["base"], result["task"], result["max_input_tokens"]) == ("mbart50_en_de", "wmt_en_de", 48)
    ((inputs, kwargs),) = calls
    assert kwargs["forced_bos_token_id"] == mbart_tok.convert_tokens_to_ids("de_DE")
    en = mbart_tok.convert_tokens_to_ids("en_XX")
    assert len(inputs) == 2 and all(ids[0] == en and ids[-1] == mbart_tok.eos_token_id for ids in inputs)
    for ids in inputs:  # the bare source, no "translate English to German:" (the vocabulary spells it)
        assert "translate" not in mbart_tok.decode(ids, skip_special_tokens=True)
    wmt = task_cfg("wmt_en_de")
    plain = tasks.encode(wmt, tasks.load_examples(wmt, 1), mbart_tok, False)  # the task's T5 template
    assert "translate" in mbart_tok.decode(plain[0], skip_special_tokens=True)


def test_docs_table_lists_every_preset_and_its_task():
    page = (PROJECT_ROOT / "docs" / "real_checkpoints.md").read_text()
    for name, task in PAIRS.items():
        hub = PRESETS[name][0] if name in PRESETS else base_cfg(name).path
        assert re.search(rf"^\| `{name}` \| `{re.escape(hub)}` \| `{task}` \|", page, re.M), name
