"""A key on the command line that is no setting of gqa-eval is refused in one line before anything runs
or is written: Hydra's ``+key=`` would add it to the config, unused, and the run would go on as
something else (``+conversion=aligned`` a run of mean conversion, ``+kv_heads=8`` one of plain MHA).
A key that names a nested setting is refused with that setting's full name."""

from __future__ import annotations

import pytest

import gqa_eval.cli as cli

QUICK = ["task=wmt_en_de", "limit=2", "task.max_new_tokens=4", "batch_size=2", "timing.roofline=false"]


def no_evaluation(cfg):
    raise AssertionError("evaluate() ran for a config with an unknown key")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("+conversion=aligned", "unknown key 'conversion': did you mean model.conversion=aligned?"),
        ("+kv_heads=8", "unknown key 'kv_heads': did you mean model.kv_heads=8?"),
        ("++kv_heads=8", "unknown key 'kv_heads': did you mean model.kv_heads=8?"),
        ("conversion=aligned", "unknown key 'conversion': did you mean model.conversion=aligned?"),
        ("+examples=4",
         "unknown key 'examples': did you mean conversion_error.examples=4 or model.calibration.examples=4?"),
        ("+calibration.examples=4",
         "unknown key 'calibration.examples': did you mean model.calibration.examples=4?"),
    ],
)  # fmt: skip
def test_a_nested_key_given_at_the_top_is_refused_naming_it(app, tmp_path, monkeypatch, override, message):
    monkeypatch.setattr(cli, "evaluate", no_evaluation)
    code, out = app(*QUICK, override, f"output_root={tmp_path}")
    assert code == f"gqa-eval: error: {message}"
    assert out == ""
    assert not tmp_path.exists() or not any(tmp_path.iterdir())  # no run directory, nothing written


def test_a_misplaced_key_in_a_sweep_is_refused_before_the_sweep_starts(app, tmp_path, monkeypatch):
    monkeypatch.setattr(cli, "evaluate", no_evaluation)
    code, _ = app("-m", *QUICK, "+kv_heads=1,8", f"output_root={tmp_path}")
    assert code == "gqa-eval: error: unknown key 'kv_heads': did you mean model.kv_heads=1,8?"
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


def test_a_key_that_names_no_setting_is_refused(app, tmp_path, monkeypatch):
    monkeypatch.setattr(cli, "evaluate", no_evaluation)
    code, _ = app(*QUICK, "+no_such_key=1", f"output_root={tmp_path}")
    assert isinstance(code, str) and code.startswith("gqa-eval: error: unknown key 'no_such_key': ")
    assert "no setting is named no_such_key" in code and "\n" not in code
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


def test_a_key_named_in_several_places_lists_them_all():
    line = cli.misplaced_key_line(["+name=x"])
    assert line is not None and line.startswith("unknown key 'name': did you mean ")
    for key in ("base.name=x", "model.name=x", "task.name=x"):
        assert key in line


def test_settings_groups_and_hydra_keys_are_not_refused():
    assert cli.misplaced_key_line([
        "model=gqa8", "model.conversion=aligned", "model.kv_heads=4", "+experiment=table1",
        "+finetuned=bart_large_cnn", "base=tiny_t5", "limit=2", "uptrain.alpha=0.05", "~shard",
        "hydra.run.dir=somewhere", "hydra/launcher=joblib", "generation.compile=false",
    ]) is None  # fmt: skip


def test_a_correct_run_still_runs(app, tmp_path):
    code, out = app(*QUICK, "model=gqa4", "model.conversion=first", f"output_root={tmp_path}")
    assert code == 0 and "finished: gqa4 on wmt_en_de" in out and "first" in out
