"""Each uptraining objective, end to end through the Trainer on the bundled tiny checkpoints: one short run
lowers its loss as expected and saves a checkpoint that loads; distill's loss is 0 when the student is the
teacher; span corruption on a tokenizer without T5's sentinels adds them only when asked."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import compose_config, read_jsonl

from gqa_eval.training.loop import train
from gqa_eval.variant import family_of
from gqa_eval.variant.checkpoints import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
QUICK = [
    "uptrain.recipe=given",
    "lr=2e-3",
    "warmup_steps=0",
    "schedule=constant",
    "log_every=1",
    "eval_examples=0",
    "progress=false",
    "threads=1",
    "save_every=0",
    "keep_resume_state=false",
    "block_tokens=32",
    "batch_size=4",
    "data.examples={cnn_dm:8,arxiv:0,pubmed:0,mediasum:0,multi_news:0,wmt_en_de:16,trivia_qa:4}",
    "data.max_input_tokens=48",
    "batch_tokens=600",
]


def uptrain(base: str, out: Path, *extra: str) -> list[float]:
    cfg = compose_config(
        "training", [*QUICK, f"init_from={ROOT / 'evals/checkpoints' / base}", f"out_dir={out}", *extra]
    )
    train(cfg)
    return [r["loss"] for r in read_jsonl(out / "train_log.jsonl") if "loss" in r]


def test_span_corruption_trains_t5_on_the_corpus_after_adding_sentinels(tmp_path):
    with pytest.raises(ValueError, match="span_corruption.add_sentinels=true"):
        uptrain("tiny_t5_plain", tmp_path / "refused", "kv_heads=4", "objective=span_corruption", "steps=2")
    assert not (tmp_path / "refused" / "config.json").exists()
    losses = uptrain(
        "tiny_t5_plain",
        tmp_path / "sc",
        "kv_heads=4",
        "objective=span_corruption",
        "span_corruption.add_sentinels=true",
        "steps=8",
    )
    assert len(losses) == 8 and sum(losses[-2:]) / 2 < losses[0] - 0.5  # new sentinels: learnt fast
    model, tokenizer = load_checkpoint(str(tmp_path / "sc"))
    assert tokenizer.convert_tokens_to_ids("<extra_id_0>") == len(tokenizer) - 1
    assert model.get_input_embeddings().weight.shape[0] == len(tokenizer) == 4100
    assert family_of(model).kv_heads == 4


def test_causal_lm_trains_a_decoder_only_conversion_on_the_corpus(tmp_path):
    losses = uptrain("tiny_llama", tmp_path / "lm", "kv_heads=4", "objective=causal_lm", "steps=8")
    assert len(losses) == 8 and sum(losses[-2:]) / 2 < losses[0] - 0.2
    model, _ = load_checkpoint(str(tmp_path / "lm"))
    assert family_of(model).kv_heads == 4
    with pytest.raises(ValueError, match="objective=span_corruption"):
        uptrain("tiny_t5_plain", tmp_path / "wrong", "kv_heads=4", "objective=causal_lm", "steps=1")


def test_distill_is_zero_for_the_teacher_itself_and_falls_for_a_conversion(tmp_path):
    # float32: under bf16 autocast the two forwards round apart (a KL of about 3e-5)
    same = uptrain(
        "tiny_t5_plain", tmp_path / "same", "kv_heads=16", "objective=distill", "steps=1", "bf16=false"
    )
    assert same == [pytest.approx(0.0, abs=1e-6)]
    losses = uptrain("tiny_t5_plain", tmp_path / "mqa", "kv_heads=1", "objective=distill", "steps=8")
    assert losses[0] > 0.5 and sum(losses[-2:]) / 2 < 0.8 * losses[0]
    # on corpus blocks (decoder-only: the causal LM batches), plus the LM loss
    lm = uptrain(
        "tiny_llama",
        tmp_path / "llama",
        "kv_heads=2",
        "objective=distill",
        "distill.data=corpus",
        "distill.lm_weight=0.5",
        "steps=4",
    )
    assert len(lm) == 4 and lm[-1] < lm[0]
