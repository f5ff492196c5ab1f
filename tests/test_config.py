"""Every model x task config composes, and the composed values are what the paper sets."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import compose_config

CONF = Path(__file__).resolve().parents[1] / "conf"
MODELS = sorted(p.stem for p in (CONF / "model").glob("*.yaml"))
TASKS = sorted(p.stem for p in (CONF / "task").glob("*.yaml"))
BASES = sorted(p.stem for p in (CONF / "base").glob("*.yaml"))
PAPER_LENGTHS = {
    "cnn_dm": (512, 256, "rouge1"),
    "wmt_en_de": (512, 256, "bleu"),
    "arxiv": (2048, 512, "rouge1"),
    "pubmed": (2048, 512, "rouge1"),
    "mediasum": (2048, 512, "rouge1"),
    "multi_news": (2048, 512, "rouge1"),
    "trivia_qa": (2048, 32, "f1"),
}


def test_config_groups_are_complete():
    assert set(MODELS) == {"mha", "gqa2", "gqa4", "gqa8", "mqa", "gqa", "saved"}
    assert set(TASKS) == set(PAPER_LENGTHS)
    assert "tiny_t5" in BASES


@pytest.mark.parametrize("model", [m for m in MODELS if m not in ("gqa", "saved")])
@pytest.mark.parametrize("task", TASKS)
def test_model_task_composes(compose_cfg, model, task):
    cfg = compose_cfg([f"model={model}", f"task={task}"])
    assert cfg.model.name == model and cfg.task.name == task
    assert cfg.model.conversion == "mean"
    expected = {"mha": None, "gqa8": 8, "gqa4": 4, "gqa2": 2, "mqa": 1}[model]
    assert cfg.model.kv_heads == expected
    max_in, max_out, primary = PAPER_LENGTHS[task]
    assert (cfg.task.max_input_tokens, cfg.task.max_new_tokens, cfg.task.primary_metric) == (
        max_in,
        max_out,
        primary,
    )
    assert cfg.task.split == "validation"
    assert cfg.task.primary_metric in cfg.task.metrics


def test_gqa_takes_kv_heads_from_command_line(compose_cfg):
    cfg = compose_cfg(["model=gqa", "model.kv_heads=4"])
    assert cfg.model.name == "gqa4" and cfg.model.kv_heads == 4


def test_defaults(compose_cfg):
    cfg = compose_cfg()
    assert (cfg.base.name, cfg.model.name, cfg.task.name) == ("tiny_t5", "mha", "cnn_dm")
    assert cfg.limit is None and cfg.seed == 0 and cfg.dtype == "float32"


@pytest.mark.parametrize(
    ("experiment", "swept"),
    [
        ("table1", "model"),
        ("groups", "model.kv_heads"),
        ("conversion", "model.conversion"),
        ("uptrain", "uptrain.alpha"),
    ],
)
def test_experiments_compose(tmp_path, experiment, swept):
    cfg = compose_config("config", [f"+experiment={experiment}"], return_hydra_config=True)
    assert swept in cfg.hydra.sweeper.params
    if experiment == "groups":
        assert cfg.timing.mode == "fixed" and cfg.task.name == "arxiv" and cfg.model.name == "gqa16"
    if experiment == "conversion":  # the paper's Fig. 4: every method x GQA-4, MQA x its three tasks
        params = cfg.hydra.sweeper.params
        assert params["model.conversion"] == "mean,first,random,aligned,clustered"
        assert params["model"] == "gqa4,mqa" and params["task"] == "cnn_dm,multi_news,trivia_qa"
        assert cfg.base.name == "tiny_t5_plain"  # trained without K/V pooling, which favours mean
    if experiment == "uptrain":  # the paper's Fig. 5: alpha x GQA-4, MQA x Fig. 4's tasks, continued recipe
        params = cfg.hydra.sweeper.params
        assert params["uptrain.alpha"] == "0,0.025,0.05,0.1" and params["model"] == "gqa4,mqa"
        assert params["task"] == "cnn_dm,multi_news,trivia_qa"
        assert cfg.base.name == "tiny_t5_plain" and cfg.uptrain.recipe == "continue"
