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
        "schedule": "constant",
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
    # the rate it trained at (the report keeps runs at other rates apart): the base's last, as continued
    lrs = {r["uptrain_alpha"]: r["uptrain_lr"] for r in rows}
    assert lrs["0"] == "" and float(lrs["0.5"]) > 0
    uptrained = list((tmp_path / "uptrained").glob("tiny_mqa_mean_a0.5_*"))
    assert len(uptrained) == 1 and (uptrained[0] / "config.json").is_file()
    starts = [r for r in read_jsonl(uptrained[0] / "train_log.jsonl") if r["step"] == 0]
    assert len(starts) == 1  # trained by the first task's run, reused by the second
    results = [json.loads(p.read_text()) for p in sweep.glob("*/result.json")]
    up = next(r for r in results if r["uptrain_alpha"] == 0.5)
    assert up["uptrain"]["continues"]["base_steps"] == 10 and up["kv_heads"] == 1
    assert up["uptrain_lr"] == up["uptrain"]["continues"]["lr"] == float(lrs["0.5"])
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


def planned(base: Path, tmp_path: Path, *extra: str, env: dict | None = None, monkeypatch=None):
    """``cfg`` after :func:`plan_uptraining` (nothing trained)."""
    from gqa_eval.training.loop import plan_uptraining

    cfg = uptrain_cfg(base, tmp_path / "up", *extra)
    plan_uptraining(cfg)
    return cfg


def test_alpha_is_a_fraction_of_the_base_pretraining_tokens(base, tmp_path, monkeypatch):
    given = ["uptrain.recipe=given", "uptrain.base_steps=1000", "uptrain.base_batch_tokens=8192",
             "objective=span_corruption", "batch_size=8", "block_tokens=128"]  # fmt: skip
    # 0.05 x 1000 steps x 8192 tokens = 409,600 tokens, at 8 x 128 = 1,024 tokens a step
    cfg = planned(base, tmp_path, *given, "uptrain.alpha=0.05")
    assert cfg.steps == 400 and cfg.uptrain.planned.tokens == 409_600
    assert cfg.uptrain.planned.tokens_per_step == 1024
    assert cfg.uptrain.planned.base["from"] == "uptrain.base_steps"
    assert planned(base, tmp_path, *given, "uptrain.alpha=0.05", "grad_accum=4").steps == 100
    monkeypatch.setenv("WORLD_SIZE", "2")  # accelerate launch --num_processes 2
    assert planned(base, tmp_path, *given, "uptrain.alpha=0.05", "grad_accum=4").steps == 50
    monkeypatch.delenv("WORLD_SIZE")
    assert planned(base, tmp_path, *given, "uptrain.tokens=102400").steps == 100
    # the base's batch unknown: alpha x its steps, at this run's batch
    alone = planned(base, tmp_path, "uptrain.recipe=given", "uptrain.base_steps=1000", "uptrain.alpha=0.05")
    assert alone.steps == 50 and alone.uptrain.planned.tokens is None
    # continuing the bundled-style base: its own stages (6 + 4 steps at its batch), corpus batch to match
    cont = planned(base, tmp_path, "objective=span_corruption", "block_tokens=32", "uptrain.alpha=0.5")
    assert cont.batch_size == cont.batch_tokens // 32 and cont.steps == round(0.5 * 10 * cont.batch_tokens / (
        cont.batch_size * 32))  # fmt: skip
    with pytest.raises(ValueError, match="give one of them"):
        planned(base, tmp_path, *given, "uptrain.alpha=0.05", "uptrain.tokens=100")


def test_hub_base_presets_carry_their_pretraining(tmp_path, t5_tokenizer):
    from gqa_eval.training.loop import preset_pretraining

    t5 = preset_pretraining("google/t5-v1_1-large")
    assert (t5["steps"], t5["batch_tokens"]) == (1_000_000, 2048 * 512)
    assert t5["preset"] == "conf/base/t5_v1_1_large.yaml"
    assert preset_pretraining("meta-llama/Llama-2-7b-hf")["steps"] * 4_000_000 == 2 * 10**12
    assert preset_pretraining("google/flan-t5-large")["steps"] == 1_100_000
    assert preset_pretraining(str(tmp_path)) is None
    # a local copy of a hub base (base.path=DIR): gqa-eval hands the preset's pretraining to the trainer
    make_t5().save_pretrained(tmp_path / "t5_copy")
    t5_tokenizer.save_pretrained(tmp_path / "t5_copy")
    overrides = [
        "base=t5_v1_1_large", f"base.path={tmp_path / 't5_copy'}", "model=gqa4", "uptrain.alpha=0.05",
        "uptrain.recipe=given", "uptrain.objective=span_corruption", "+uptrain.train.batch_size=16",
        "+uptrain.train.block_tokens=512",
    ]  # fmt: skip
    cfg = compose_config("config", overrides)
    from gqa_eval.training.loop import plan_uptraining
    from gqa_eval.training.uptrain import training_config, uptrain_settings

    train_cfg = training_config(cfg, tmp_path / "up", uptrain_settings(cfg))
    plan_uptraining(train_cfg)
    # 5% of 1M steps of 2^20 tokens, at 16 x 512 tokens a step
    assert train_cfg.steps == round(0.05 * 1_000_000 * 1_048_576 / (16 * 512))
    assert train_cfg.uptrain.planned.base["from"] == "conf/base/t5_v1_1_large.yaml"
    assert train_cfg.objective == "span_corruption"
    with pytest.raises(ValueError, match="conf/training.yaml has no setting 'grad_acum'"):
        bad = compose_config(
            "config", ["base=t5_v1_1_large", "model=gqa4", "uptrain.alpha=0.05", "+uptrain.train.grad_acum=4"]
        )
        training_config(bad, tmp_path / "up2", uptrain_settings(bad))


def test_a_continued_uptraining_can_rewarm_to_a_peak_and_decay_to_where_the_base_ended(base, tmp_path):
    cfg = planned(base, tmp_path, "uptrain.alpha=0.5", "uptrain.lr=3e-3")  # the base ended at 3e-4
    assert (cfg.lr, cfg.schedule, cfg.min_lr_ratio) == (pytest.approx(3e-3), "cosine", pytest.approx(0.1))
    assert cfg.warmup_steps == 2  # the stage's warm-up share (2 of 4 steps) of 5 steps, rounded
    from gqa_eval.training.loop import final_lr

    assert final_lr(cfg) == pytest.approx(3e-4)
    with pytest.raises(ValueError, match="a peak learning rate >= the base's last"):
        planned(base, tmp_path, "uptrain.alpha=0.5", "uptrain.lr=1e-5")
