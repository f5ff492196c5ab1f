"""The training stage (gqa_eval.training: the loop on Hugging Face's Trainer, data, model) and the committed
tiny checkpoints: training lowers the loss and resumes exactly from the Trainer's checkpoint; uptraining a
converted T5 saves a checkpoint the evaluation loads; training data never contains a bundled validation
example; the committed checkpoints decode the same non-trivial outputs every time."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import compose_config, make_decoder, make_t5, read_jsonl, task_cfg
from omegaconf import OmegaConf
from safetensors.torch import load_file

from gqa_eval import attention_heads, convert_to_gqa
from gqa_eval.generation import generate
from gqa_eval.tasks import encode, load_examples
from gqa_eval.timing import Timer
from gqa_eval.training.data import collate, encode_pairs, generator, plan_epoch, training_examples
from gqa_eval.training.kernels import lean_attention
from gqa_eval.training.loop import lr_factor, train
from gqa_eval.training.pooled import pooled_kv, pooled_projections
from gqa_eval.variant.checkpoints import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
TASKS = ("cnn_dm", "arxiv", "pubmed", "mediasum", "multi_news", "wmt_en_de", "trivia_qa")
# A model and data small enough that a dozen steps take a few seconds.
TINY = [
    "architecture.config.d_model=32",
    "architecture.config.d_kv=4",
    "architecture.config.num_heads=8",
    "architecture.config.d_ff=64",
    "architecture.config.num_layers=1",
    "architecture.config.num_decoder_layers=1",
    "tokenizer.vocab_size=400",
    "tokenizer.examples_per_task=6",
    "data.max_input_tokens=64",
    "data.examples={cnn_dm:6,arxiv:0,pubmed:0,mediasum:0,multi_news:0,wmt_en_de:12,trivia_qa:6}",
    "batch_tokens=320",
    "lr=3e-3",
    "warmup_steps=2",
    "eval_examples=2",
    "eval_max_new_tokens=4",
    "log_every=1",
    "progress=false",
    "threads=1",
]


def train_cfg(overrides: list[str]):
    return compose_config("training", overrides)


def read_log(out: Path) -> list[dict]:
    return read_jsonl(out / "train_log.jsonl")


def fixed_batch_loss(checkpoint: Path) -> float:
    model, tokenizer = load_checkpoint(str(checkpoint))
    task = task_cfg("wmt_en_de", resolve=True)
    pairs = encode_pairs(task, load_examples(task, 8), tokenizer, decoder_only=False)
    with torch.no_grad():
        return model(**collate(pairs, tokenizer.pad_token_id, decoder_only=False)).loss.item()


def test_config_composes_for_both_architectures():
    for name, family in (("tiny_t5", "t5"), ("tiny_llama", "llama")):
        cfg = train_cfg([f"train={name}"])
        assert cfg.name == name and cfg.architecture.family == family
        assert cfg.steps > 0 and cfg.batch_tokens > 0 and cfg.lr > 0
        assert set(cfg.tasks) == set(TASKS)  # the evaluation's own task configs
        assert cfg.tasks.cnn_dm.input_template == "summarize: {document}"


def test_tiny_t5_second_stage_continues_the_first():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "build_checkpoints", ROOT / "evals" / "build_checkpoints.py"
    )
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    (first, first_dir), (second, second_dir) = build.STAGES["tiny_t5"]
    stage1, stage2 = (
        train_cfg([f"train={first}"]),
        train_cfg([f"train={second}", f"output_root={ROOT / 'outputs'}"]),
    )
    assert second_dir is None and Path(stage2.init_from) == first_dir  # the last stage writes the checkpoint
    assert stage1.init_from is None and stage2.architecture == stage1.architecture
    # reading questions get more of the second stage's mixture, from new generated examples
    share = {c.name: c.data.examples.trivia_qa / sum(c.data.examples.values()) for c in (stage1, stage2)}
    assert share[second] > 2 * share[first] and stage2.data.seed != stage1.data.seed


def test_lr_schedule_warms_up_and_decays():
    cfg = OmegaConf.create({"steps": 10, "warmup_steps": 2, "schedule": "cosine", "min_lr_ratio": 0.1})
    factors = [lr_factor(s, cfg) for s in range(11)]
    assert factors[0] == 0.5 and factors[1] == 1.0
    assert all(a >= b for a, b in zip(factors[1:], factors[2:], strict=False))
    assert factors[10] == pytest.approx(0.1)


@pytest.mark.parametrize("kv_heads", [None, 2])
def test_lean_training_attention_equals_sdpa(batch, kv_heads):
    model = make_t5(n_heads=8).double().train()
    if kv_heads:
        convert_to_gqa(model, kv_heads)
    batch = {**batch, "labels": batch.pop("decoder_input_ids")}  # padded source; causal decoder
    expected = model(**batch)
    with lean_attention(model):
        got = model(**batch)
    assert torch.allclose(got.logits, expected.logits, atol=1e-10)
    got.loss.backward()  # and it trains
    assert model.decoder.config._attn_implementation == ("gqa_t5" if kv_heads else "sdpa")


@pytest.mark.parametrize("make", [lambda: make_t5(n_heads=8), lambda: make_decoder("llama", 8, 8)])
@pytest.mark.parametrize("groups", [4, 1])
def test_pooled_step_runs_the_mean_pooled_conversion(make, groups):
    model = make().double()
    ids = torch.randint(3, 97, (2, 9), generator=torch.Generator().manual_seed(0))
    inputs = {"input_ids": ids, "labels": ids}
    expected = convert_to_gqa(copy.deepcopy(model), groups)(**inputs).logits
    got = torch.func.functional_call(model, pooled_kv(model, groups), args=(), kwargs=inputs).logits
    assert torch.allclose(got, expected, atol=1e-5)  # convert_to_gqa pools in float32
    plain = model(**inputs).logits
    with pooled_projections(model, groups):  # the form training uses: the model called as it is
        inside = model(**inputs)
    assert torch.allclose(inside.logits, expected, atol=1e-5)
    assert torch.equal(model(**inputs).logits, plain)  # the projections restored on exit
    inside.loss.backward()
    assert all(p.weight.grad is not None for p in attention_projections(model))


def attention_projections(model):
    from gqa_eval.variant import family_of

    return family_of(model).kv_projections()


def test_gradient_checkpointing_trains_the_same_weights_pooled_steps_included(tmp_path):
    """Activation checkpointing recomputes the forward in the backward pass: a pooled step's recomputation
    must pool too, so that on or off the same updates come out."""
    runs = {}
    for on in (False, True):
        out = tmp_path / f"ckpt_{on}"
        run = [*TINY, f"out_dir={out}", "steps=4", "save_every=0", "eval_examples=0", "bf16=false",
               "pool_kv={4:0.5,1:0.3}", "pool_kv_from=0",
               f"gradient_checkpointing={str(on).lower()}"]  # fmt: skip
        train(train_cfg(run))
        runs[on] = load_file(out / "model.safetensors")
    a, b = runs[False], runs[True]
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst < 1e-6, worst


def test_training_lowers_loss_and_resumes_exactly(tmp_path):
    full = train_cfg([*TINY, f"out_dir={tmp_path / 'full'}", "steps=12", "save_every=0"])
    result = train(full)
    log = read_log(tmp_path / "full")
    losses = [r["loss"] for r in log if "loss" in r]
    assert len(losses) == 12 and result["step"] == 12
    assert set(result["eval"]) == {"cnn_dm", "wmt_en_de", "trivia_qa"}
    # The loss of a fixed batch: after one step (same run, its first save) versus after twelve.
    train(train_cfg([*TINY, f"out_dir={tmp_path / 'one'}", "steps=12", "stop_at=1", "save_every=0"]))
    assert (
        fixed_batch_loss(tmp_path / "full")
        < fixed_batch_loss(tmp_path / "one/checkpoints/checkpoint-1") - 0.1
    )

    # The same run, interrupted at step 5 and resumed, ends on the same weights and optimizer state:
    # the Trainer's own checkpoint (optimizer, scheduler, RNG), and the same batches after it.
    part = [*TINY, f"out_dir={tmp_path / 'part'}", "steps=12", "save_every=0"]
    assert train(train_cfg([*part, "stop_at=5"]))["step"] == 5
    checkpoint = tmp_path / "part/checkpoints/checkpoint-5"
    assert json.loads((checkpoint / "trainer_state.json").read_text())["global_step"] == 5
    assert torch.load(checkpoint / "scheduler.pt", weights_only=True)["last_epoch"] == 5
    assert not (tmp_path / "part/model.safetensors").exists()  # not finished yet
    assert train(train_cfg(part))["step"] == 12
    resumed = read_log(tmp_path / "part")
    assert [r["step"] for r in resumed if "loss" in r] == list(range(1, 13))
    assert [r["loss"] for r in resumed if "loss" in r] == losses
    a, b = load_file(tmp_path / "full/model.safetensors"), load_file(tmp_path / "part/model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    last = "checkpoints/checkpoint-12/optimizer.pt"
    sa = torch.load(tmp_path / "full" / last, weights_only=True)["state"]
    sb = torch.load(tmp_path / "part" / last, weights_only=True)["state"]
    assert sa and all(torch.equal(sa[i]["exp_avg"], sb[i]["exp_avg"]) for i in sa)

    # A finished checkpoint is not trained over by accident, and resume state of other settings is refused.
    shutil.rmtree(tmp_path / "full" / "checkpoints")
    with pytest.raises(FileExistsError, match="overwrite=true"):
        train(train_cfg([*TINY, f"out_dir={tmp_path / 'full'}", "steps=3"]))
    with pytest.raises(ValueError, match="other settings"):
        train(train_cfg([*part, "seed=5"]))


def test_uptraining_a_converted_t5_saves_a_loadable_gqa_checkpoint(tmp_path):
    train(train_cfg([*TINY, f"out_dir={tmp_path / 'mha'}", "steps=2", "eval_every=0"]))
    up = [
        *TINY,
        f"init_from={tmp_path / 'mha'}",
        "kv_heads=2",
        f"out_dir={tmp_path / 'gqa2'}",
        "steps=3",
        "eval_every=3",
        "keep_resume_state=false",
    ]
    result = train(train_cfg(up))
    assert result["step"] == 3
    assert [r["step"] for r in read_log(tmp_path / "gqa2") if "eval" in r] == [0, 3]  # before and after
    assert not (tmp_path / "gqa2/checkpoints").exists()
    model, tokenizer = load_checkpoint(str(tmp_path / "gqa2"))
    assert attention_heads(model) == (8, 2)
    assert model.config.gqa_conversion[-1]["kv_heads"] == 2
    mha = load_file(tmp_path / "mha/model.safetensors")
    gqa = load_file(tmp_path / "gqa2/model.safetensors")
    assert gqa["decoder.block.0.layer.0.SelfAttention.k.weight"].shape[0] == 2 * 4
    assert not torch.equal(mha["encoder.block.0.layer.0.SelfAttention.q.weight"],
                           gqa["encoder.block.0.layer.0.SelfAttention.q.weight"])  # fmt: skip


def test_training_data_never_contains_a_validation_example(tmp_path):
    gen = generator()
    for name in TASKS:
        task = task_cfg(name, resolve=True)
        train_examples = training_examples(task, 300, seed=1, workdir=tmp_path)
        valid = load_examples(task)
        if name == "trivia_qa":  # answers recur (years, cities); a subject is only asked about in its split
            assert not {ex.fields["question"] for ex in train_examples} & {
                ex.fields["question"] for ex in valid
            }
            subjects = {r["entity_pages"]["title"][0] for r in gen.generate(name, "train", 300, 1)}
            valid_subjects = {r["entity_pages"]["title"][0] for r in gen.generate(name, "validation", 64)}
            assert not subjects & valid_subjects
        else:  # the reference (the split key) and the input document both differ
            assert not {ex.references[0] for ex in train_examples} & {ex.references[0] for ex in valid}, name
            train_inputs = {json.dumps(ex.fields, sort_keys=True) for ex in train_examples}
            assert not train_inputs & {json.dumps(ex.fields, sort_keys=True) for ex in valid}, name
        assert training_examples(task, 20, seed=1, workdir=tmp_path / "again") == train_examples[:20]


def test_counterfactual_trivia_reads_its_answers_from_the_evidence(tmp_path):
    task = task_cfg("trivia_qa", resolve=True)
    plain = training_examples(task, 40, seed=1, workdir=tmp_path / "plain")
    examples = training_examples(task, 40, seed=1, workdir=tmp_path / "cf", counterfactual_qa=True)
    assert examples == training_examples(task, 40, seed=1, workdir=tmp_path / "again", counterfactual_qa=True)
    assert len(examples) > 3 * len(plain)  # every relation of each record's subject is asked
    assert all(ex.references[0] in ex.fields["context"] for ex in examples)
    contexts = {ex.fields["context"] for ex in examples}
    assert len(contexts) == len(plain) and not contexts & {ex.fields["context"] for ex in plain}
    valid_subjects = {
        r["entity_pages"]["title"][0] for r in generator().generate("trivia_qa", "validation", 64)
    }
    assert not any(s in ex.fields["question"] for ex in examples for s in valid_subjects)


def test_epoch_plan_is_deterministic_and_covers_every_example():
    lengths = [1 + (7 * i) % 50 for i in range(103)]
    plan = plan_epoch(lengths, 120, seed=3, epoch=1, pool=40)
    assert plan == plan_epoch(lengths, 120, seed=3, epoch=1, pool=40)
    assert plan != plan_epoch(lengths, 120, seed=3, epoch=2, pool=40)
    assert sorted(i for batch in plan for i in batch) == list(range(103))
    assert all(len(b) * max(lengths[i] for i in b) <= 120 for b in plan)


@pytest.mark.parametrize("base", ["tiny_t5", "tiny_llama"])
def test_committed_checkpoint_decodes_the_same_real_outputs_every_time(base):
    model, tokenizer = load_checkpoint(str(ROOT / "evals" / "checkpoints" / base))
    decoder_only = not model.config.is_encoder_decoder
    outputs = []
    for name in ("wmt_en_de", "trivia_qa"):
        task = task_cfg(name, resolve=True)
        examples = load_examples(task, 4)
        inputs = encode(task, examples, tokenizer, decoder_only)
        runs = [
            generate(model, tokenizer, inputs, max_new_tokens=24, batch_size=4, timer=Timer(), progress=False)
            for _ in range(2)
        ]
        assert runs[0] == runs[1], name
        outputs += [runs[0][i] for i in range(len(examples))]
    assert len(set(outputs)) == len(outputs)  # every example gets its own answer
    assert all(len(set(text.split())) > 1 or len(text.split()) <= 2 for text in outputs)
    files = [p for p in (ROOT / "evals" / "checkpoints" / base).rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= 20 * 2**20
