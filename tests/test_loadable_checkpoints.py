"""A saved GQA checkpoint loads without gqa-eval: T5 and BART-like ones with plain
``AutoModelForSeq2SeqLM.from_pretrained(path, trust_remote_code=True)`` (their own ``modeling_gqa.py``
through ``auto_map``), decoder-only ones with plain ``AutoModelForCausalLM``, each in a fresh process where
``gqa_eval`` cannot be imported, to the logits gqa-eval computes. Without ``trust_remote_code`` the
seq2seq ones fail loudly instead of re-initialising K/V; gqa-eval's ``load_checkpoint`` keeps its own
classes and never runs the checkpoint's code; the model card says how to load and how it was converted."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
import transformers
from conftest import make_decoder, make_t5, seqs
from test_families_seq2seq import make_seq2seq

from gqa_eval import convert_to_gqa, load_checkpoint, save_converted
from gqa_eval.variant import remote_modeling
from gqa_eval.variant.bart import GROUPED_CLASSES
from gqa_eval.variant.loadable import CARD_FILE, MODELING_FILE, write_loadable_files
from gqa_eval.variant.t5 import T5GQAForConditionalGeneration

KV_HEADS = 2


def t5_calibration() -> list[dict]:
    return [{"input_ids": torch.tensor([s]), "labels": torch.tensor([s[:6]])} for s in seqs(4, 10)]


def converted(name: str):
    """The in-process gqa-eval model ``name``, converted to ``KV_HEADS`` key/value heads (G < H)."""
    if name == "t5":
        return convert_to_gqa(make_t5(n_heads=8), KV_HEADS)
    if name == "t5_clustered":  # permuted heads: each decoder layer reads the relative bias in its order
        model = convert_to_gqa(make_t5(n_heads=8), KV_HEADS, method="clustered", calibration=t5_calibration())
        assert model.config.gqa_bias_head_order is not None
        return model
    if name == "llama":
        return convert_to_gqa(make_decoder(n_heads=8, kv_heads=8), KV_HEADS)
    if name == "bart_mha":  # G = H: the stock class sizes it
        model = make_seq2seq("bart")
        return convert_to_gqa(model, model.config.decoder_attention_heads)
    return convert_to_gqa(make_seq2seq(name), KV_HEADS)


GROUPED = ["t5", "t5_clustered", *GROUPED_CLASSES]  # seq2seq with G < H: need their modeling_gqa.py
MODELS = [*GROUPED, "bart_mha", "llama"]


def inputs(name: str) -> dict[str, torch.Tensor]:
    """Fixed inputs; seq2seq sources padded in row 0 (decoder-only unpadded: a padded row's outputs are
    never read)."""
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(3, 90, (2, 9), generator=gen)
    if name == "llama":
        return {"input_ids": ids}
    mask = torch.ones_like(ids)
    mask[0, 6:] = 0
    ids[0, 6:] = 0
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "decoder_input_ids": torch.randint(3, 90, (2, 5), generator=gen),
    }


@torch.no_grad()
def logits(model, name: str) -> torch.Tensor:
    return model.eval()(**inputs(name)).logits


FRESH = r"""
import json, sys

class NoGqaEval:  # gqa_eval cannot be imported here: what loads must be plain transformers
    def find_spec(self, name, path=None, target=None):
        if name == "gqa_eval" or name.startswith("gqa_eval."):
            raise ImportError(f"{name} is blocked in this process")

sys.meta_path.insert(0, NoGqaEval())
try:
    import gqa_eval  # noqa: F401
    raise SystemExit("gqa_eval is still importable")
except ImportError:
    pass
import torch
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

report = {}
for name, path in json.loads(sys.argv[1]).items():
    batch = torch.load(f"{path}/inputs.pt")
    entry = report[name] = {}
    if "decoder_input_ids" in batch:
        try:
            AutoModelForSeq2SeqLM.from_pretrained(path)
            entry["plain"] = "loaded"
        except Exception as err:
            entry["plain"] = f"{type(err).__name__}: {err}"
        model = AutoModelForSeq2SeqLM.from_pretrained(path, trust_remote_code=True)
    else:
        model = AutoModelForCausalLM.from_pretrained(path)
    entry["module"] = type(model).__module__
    with torch.no_grad():
        torch.save(model.eval()(**batch).logits, f"{path}/fresh_logits.pt")
assert not any(m == "gqa_eval" or m.startswith("gqa_eval.") for m in sys.modules)
print(json.dumps(report))
"""


@pytest.fixture(scope="module")
def saved(tmp_path_factory, t5_tokenizer):
    """Each model saved with ``save_converted``, and its in-process gqa-eval logits."""
    root = tmp_path_factory.mktemp("loadable")
    paths, expected = {}, {}
    for name in MODELS:
        model = converted(name)
        paths[name] = save_converted(model, t5_tokenizer, root / name)
        torch.save(inputs(name), paths[name] / "inputs.pt")
        expected[name] = logits(model, name)
    return paths, expected


@pytest.fixture(scope="module")
def fresh(saved, tmp_path_factory):
    """What a fresh process with plain transformers (and no gqa_eval) loads from each checkpoint."""
    paths, _ = saved
    cache = tmp_path_factory.mktemp("hf_modules")  # where transformers copies modeling_gqa.py
    env = {**os.environ, "HF_MODULES_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    args = json.dumps({name: str(path) for name, path in paths.items()})
    done = subprocess.run(
        [sys.executable, "-c", FRESH, args], cwd=cache, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", MODELS)
def test_fresh_plain_transformers_gives_gqa_eval_logits(saved, fresh, name):
    paths, expected = saved
    torch.testing.assert_close(torch.load(paths[name] / "fresh_logits.pt"), expected[name])
    if name in GROUPED:
        assert fresh[name]["module"].endswith(".modeling_gqa")  # the checkpoint's own file built it
    else:
        assert fresh[name]["module"].startswith("transformers.models.")
        assert not (paths[name] / MODELING_FILE).exists()
        assert "auto_map" not in json.loads((paths[name] / "config.json").read_text())


@pytest.mark.parametrize("name", GROUPED)
def test_plain_load_without_remote_code_fails_loudly(fresh, name):
    """Not silently re-initialised: transformers' multi-head class refuses the narrowed K/V weights."""
    assert fresh[name]["plain"] != "loaded"
    assert "mismatch" in fresh[name]["plain"].lower()


@pytest.mark.parametrize("trust_remote_code", [False, True])
@pytest.mark.parametrize("name", ["t5_clustered", "bart"])
def test_load_checkpoint_uses_its_own_classes_and_runs_no_checkpoint_code(
    saved, monkeypatch, name, trust_remote_code
):
    paths, expected = saved

    def refuse(*args, **kwargs):
        raise AssertionError("load_checkpoint ran the checkpoint's own code")

    for module in (
        transformers.dynamic_module_utils,
        transformers.models.auto.auto_factory,
        transformers.models.auto.configuration_auto,
        transformers.models.auto.tokenization_auto,
    ):
        if hasattr(module, "get_class_from_dynamic_module"):
            monkeypatch.setattr(module, "get_class_from_dynamic_module", refuse)
    model, _ = load_checkpoint(str(paths[name]), trust_remote_code=trust_remote_code)
    own = T5GQAForConditionalGeneration if name.startswith("t5") else GROUPED_CLASSES[name]
    assert type(model) is own
    torch.testing.assert_close(logits(model, name), expected[name])


def test_remote_classes_cover_every_grouped_family():
    """Every seq2seq family gqa-eval reloads grouped has a class in modeling_gqa.py, named as gqa-eval's
    (config.json's ``architectures`` then names the class ``auto_map`` points at)."""
    ours = {"t5": T5GQAForConditionalGeneration, **GROUPED_CLASSES}
    assert {t: c.__name__ for t, c in remote_modeling.CLASSES.items()} == {
        t: c.__name__ for t, c in ours.items()
    }


@pytest.mark.parametrize("name", ["t5_clustered", "bart_mha", "llama"])
def test_model_card_says_how_to_load_and_how_it_was_converted(saved, name):
    paths, _ = saved
    card = (paths[name] / CARD_FILE).read_text()
    history = json.loads((paths[name] / "gqa_conversion.json").read_text())["history"][-1]
    assert "load_checkpoint(path)" in card
    plain = {
        "t5_clustered": "AutoModelForSeq2SeqLM.from_pretrained(path, trust_remote_code=True)",
        "bart_mha": "AutoModelForSeq2SeqLM.from_pretrained(path)",
        "llama": "AutoModelForCausalLM.from_pretrained(path)",
    }[name]
    assert plain in card
    assert ("trust_remote_code" in card) == (name in GROUPED)
    assert f"{history['from_kv_heads']} -> {history['kv_heads']} key/value heads" in card
    assert f"method `{history['method']}`" in card


def test_resaving_without_groups_drops_the_modeling_file(tmp_path, t5_tokenizer):
    out = save_converted(converted("bart"), t5_tokenizer, tmp_path / "ckpt")
    assert (out / MODELING_FILE).exists()
    save_converted(converted("bart_mha"), t5_tokenizer, out, overwrite=True)
    assert not (out / MODELING_FILE).exists()
    assert "auto_map" not in json.loads((out / "config.json").read_text())


def test_a_card_gqa_eval_did_not_write_is_kept(tmp_path, t5_tokenizer):
    model = converted("bart")
    out = save_converted(model, t5_tokenizer, tmp_path / "ckpt")
    (out / CARD_FILE).write_text("my own card\n")
    write_loadable_files(model, out)
    assert (out / CARD_FILE).read_text() == "my own card\n"
    assert (out / MODELING_FILE).exists()
