"""Uptraining (the paper's sec. 2.1, Fig. 5): ``uptrain.recipe=continue`` continues the base's last
training stage (its mixture, the learning rate it ended with, warm-up scaled to the run) for alpha x the
base's training steps, and says so; ``gqa-eval uptrain.alpha=A`` trains the uptrained variant once, reuses
it for the other tasks, and records alpha and the steps in result.json and summary.csv; bad settings are
refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import compose_config, make_t5, read_csv, read_jsonl
from omegaconf import OmegaConf
from test_train import TINY

from gqa_eval.training.loop import lr_factor, train

BASE_DATA = "data.examples={cnn_dm:6,arxiv:0,pubmed:0,mediasum:0,multi_news:0,wmt_en_de:12,trivia_qa:6}"


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """A tiny trained T5 that carries its training configs: stage 1 of 6 steps (its config only) and
    a last stage of 4 steps (lr 3e-3, 2 warm-up steps, cosine to 10%)."""
    out = tmp_path_factory.mktemp("uptrain") / "base"
    train(compose_config("training", [*TINY, BASE_DATA, f"out_dir={out}", "steps=4", "eval_examples=0"]))
    stage1 = OmegaConf.load(out / "train_config.yaml")
    stage1.steps = 6
    OmegaConf.save(stage1, out / "stage1_train_config.yaml")
    return out


def uptrain_cfg(base: Path, out: Path, *extra: str):
    quick = [o for o in TINY if not o.startswith(("lr=", "warmup_steps=", "batch_tokens=", "data.examples"))]
    return compose_config(
        "training",
        [
            *quick,
            "lr=0.5",
            "warmup_steps=50",
            "batch_tokens=300",
            "data.examples={cnn_dm:3,arxiv:0,pubmed:0,mediasum:0,multi_news:0,wmt_en_de:0,trivia_qa:3}",
            f"init_from={base}",
            "kv_heads=2",
            f"out_dir={out}",
            "eval_examples=0",
            *extra,
        ],
    )


def test_continue_recipe_continues_the_bases_last_stage(base, tmp_path):
    train(uptrain_cfg(base, tmp_path / "up", "uptrain.alpha=0.5"))
    saved = OmegaConf.load(tmp_path / "up/train_config.yaml")
    assert saved.steps == 5  # 0.5 x (6 + 4) steps of the base's two stages
    assert saved.lr == pytest.approx(3e-4) and saved.schedule == "constant"  # where the stage's cosine ended
    assert saved.warmup_steps == 2  # the stage warmed up for half its steps: half of 5, rounded
    assert saved.batch_tokens == 320 and saved.data.examples.wmt_en_de == 12  # the base's mixture
    assert saved.pool_kv is None
    assert saved.uptrain.continues == {
        "train_config": str(base / "train_config.yaml"),
        "stage": "tiny_t5",
        "base_steps": 10,
        "lr": pytest.approx(3e-4),
        "warmup_steps": 2,
    }
    lrs = [r["lr"] for r in read_jsonl(tmp_path / "up/train_log.jsonl") if "lr" in r]
    assert lrs == pytest.approx(
        [1.5e-4] + [3e-4] * 4
    )  # the rate each step ran at: warm-up, then the base's last
    assert [lr_factor(s, saved) for s in range(5)] == [0.5, 1, 1, 1, 1]  # warm-up, then constant
    record = json.loads((tmp_path / "up/config.json").read_text())["gqa_uptraining"]
    assert (record["alpha"], record["steps"], record["recipe"], record["kv_heads"]) == (0.5, 5, "continue", 2)


def test_given_recipe_keeps_this_configs_values(base, tmp_path):
    train(uptrain_cfg(base, tmp_path / "up", "uptrain.alpha=0.2", "uptrain.recipe=given", "lr=1e-3"))
    saved = OmegaConf.load(tmp_path / "up/train_config.yaml")
    assert (saved.steps, saved.lr, saved.schedule, saved.batch_tokens) == (2, 1e-3, "cosine", 300)
    assert saved.uptrain.continues is None and saved.data.examples.wmt_en_de == 0


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["uptrain.recipe=again"], "choose continue"),
        (["uptrain.alpha=-0.1"], "fraction > 0"),
    ],
)
def test_bad_uptraining_settings_are_refused(base, tmp_path, extra, message):
    with pytest.raises(ValueError, match=message):
        train(uptrain_cfg(base, tmp_path / "up", *extra))
    assert not (tmp_path / "up").exists()


def test_a_base_without_training_configs_needs_the_recipe_or_its_steps(tmp_path, t5_tokenizer):
    make_t5().save_pretrained(tmp_path / "hub_like")
    t5_tokenizer.save_pretrained(tmp_path / "hub_like")
    with pytest.raises(ValueError, match="carries no train_config.yaml to continue"):
        train(uptrain_cfg(tmp_path / "hub_like", tmp_path / "up", "uptrain.alpha=0.1"))
    with pytest.raises(ValueError, match="set uptrain.base_steps=N"):
        train(
            uptrain_cfg(tmp_path / "hub_like", tmp_path / "up", "uptrain.alpha=0.1", "uptrain.recipe=given")
        )
    with pytest.raises(ValueError, match="need init_from=CHECKPOINT"):
        train(compose_config("training", [*TINY, f"out_dir={tmp_path / 'x'}", "uptrain.alpha=0.1"]))


def test_the_uptrain_preset_trains_once_and_records_alpha(app, base, tmp_path):
    sweep = tmp_path / "sweep"
    args = [
        "-m", "+experiment=uptrain", f"base.path={base}", "base.name=tiny", "model=mqa",
        "uptrain.alpha=0,0.5", "task=wmt_en_de,trivia_qa", "limit=2", "batch_size=2",
        f"output_root={tmp_path}", f"hydra.sweep.dir={sweep}", "timing.roofline=false",
    ]  # fmt: skip
    code, _ = app(*args)
    assert code == 0
    rows = read_csv(sweep / "summary.csv")
    got = sorted((r["task"], r["uptrain_alpha"], r["uptrain_steps"]) for r in rows)
    assert got == [
        ("trivia_qa", "0", "0"), ("trivia_qa", "0.5", "5"),
        ("wmt_en_de", "0", "0"), ("wmt_en_de", "0.5", "5"),
    ]  # fmt: skip
    uptrained = list((tmp_path / "uptrained").glob("tiny_mqa_mean_a0.5_*"))
    assert len(uptrained) == 1 and (uptrained[0] / "config.json").is_file()
    starts = [r for r in read_jsonl(uptrained[0] / "train_log.jsonl") if r["step"] == 0]
    assert len(starts) == 1  # trained by the first task's run, reused by the second
    results = [json.loads(p.read_text()) for p in sweep.glob("*/result.json")]
    up = next(r for r in results if r["uptrain_alpha"] == 0.5)
    assert up["uptrain"]["continues"]["base_steps"] == 10 and up["kv_heads"] == 1
    assert up["provenance"]["conversion"]["kv_heads"] == 1  # the variant asked for, not the reload's
    assert up["conversion"] == "mean" and up["config"]["uptrain"]["alpha"] == 0.5
    table = (sweep / "table.md").read_text()
    assert "tiny MQA (mean, uptrained α=0.5)" in table and "tiny MQA (mean) " in table
    assert (sweep / "uptraining.png").stat().st_size > 0


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["model=mha", "uptrain.alpha=0.05"], "converts nothing"),
        (["model=gqa4", "uptrain.alpha=0.05", "model.checkpoint=somewhere"], "model.checkpoint loads"),
        (["model=gqa4", "uptrain.alpha=fast"], "fraction >= 0"),
    ],
)
def test_evaluation_refuses_uptraining_what_it_cannot(app, tmp_path, extra, message):
    code, _ = app(*extra, "task=wmt_en_de", "limit=1", f"output_root={tmp_path}")
    assert message in str(code)
    assert not (tmp_path / "uptrained").exists()


def test_uptraining_lines_are_per_variant_and_alpha():
    from gqa_eval.report.plots import method_bars, uptraining_series
    from gqa_eval.report.table import pivot

    def run(model, kv, conversion, alpha, score):
        return {"base": "b", "model": model, "n_heads": 4, "kv_heads": kv, "conversion": conversion,
                "task": "cnn_dm", "metric": "rouge1", "score": score, "uptrain_alpha": alpha}  # fmt: skip

    rows = [run("mha", 4, None, 0, 50.0), run("mqa", 1, "mean", 0, 2.0), run("mqa", 1, "mean", 0.05, 10.0),
            run("mqa", 1, "mean", 0.1, 8.0), run("mqa", 1, "first", 0, 1.0)]  # fmt: skip
    table = pivot(rows)
    assert uptraining_series(table) == {"b MQA (mean)": [(0.0, 2.0), (0.05, 10.0), (0.1, 8.0)]}
    assert method_bars(table) == {"MQA": {"mean": 2.0, "first": 1.0}}  # Fig. 4: before uptraining only
    assert "b MQA (mean, uptrained α=0.05)" in [v.label for v in table.variants]
