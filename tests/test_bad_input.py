"""Bad input is refused in one line naming the problem and the fix, before anything is loaded or written."""

from __future__ import annotations

import json

import pytest

from gqa_eval.evaluate import evaluate
from gqa_eval.report.summary import report_root
from gqa_eval.tasks import TaskDataError, load_examples

RECORD = {"article": "An article.", "highlights": "A summary.", "id": "x1"}


def _task(compose_cfg, path) -> dict:
    cfg = compose_cfg(["task=cnn_dm", f"task.data.path={path}"])
    return dict(cfg.task)


def test_empty_data_file_is_named(compose_cfg, tmp_path):
    path = tmp_path / "validation.jsonl"
    path.write_text("\n")
    with pytest.raises(TaskDataError, match=r"data file .*validation\.jsonl is empty"):
        load_examples(_task(compose_cfg, path))


@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
def test_malformed_json_line_names_file_and_line(compose_cfg, tmp_path, suffix):
    path = tmp_path / f"validation{suffix}"
    path.write_text(json.dumps(RECORD) + "\n" + json.dumps(RECORD) + "\n" + '{"article": "a", oops}\n')
    with pytest.raises(TaskDataError, match=rf"validation\{suffix} line 3 is not valid JSON"):
        load_examples(_task(compose_cfg, path))


def test_valid_json_document_still_loads(compose_cfg, tmp_path):
    path = tmp_path / "validation.json"
    path.write_text(json.dumps([RECORD, {**RECORD, "id": "x2"}]))
    assert [ex.id for ex in load_examples(_task(compose_cfg, path))] == ["x1", "x2"]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("limit=abc", r"limit must be a positive whole number of examples or null for all, got limit='abc'"),
        ("limit=0", r"limit must be a positive whole number"),
        ("batch_size=0", r"batch_size must be a whole number >= 1, got batch_size=0"),
        ("base.chat_template=maybe", r"base.chat_template must be auto, true or false"),
        ("seed=abc", r"seed must be a whole number >= 0, got seed='abc'"),
        ("model.kv_heads=abc", r"model.kv_heads must be a whole number of key/value heads >= 1 .*'abc'"),
        ("model.kv_heads=0", r"model.kv_heads must be a whole number of key/value heads >= 1 .*=0"),
        ("task.max_new_tokens=0", r"task.max_new_tokens must be a whole number of tokens >= 1, got .*=0"),
    ],
)
def test_bad_values_are_refused_before_any_work(compose_cfg, tmp_path, override, message):
    with pytest.raises(ValueError, match=message):
        evaluate(compose_cfg([override]), output_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_saved_model_without_checkpoint_is_an_error_naming_the_key(compose_cfg, tmp_path):
    expected = r"model\.checkpoint is required but not set; .*model\.checkpoint=DIR"
    with pytest.raises(ValueError, match=expected):
        evaluate(compose_cfg(["model=saved", "limit=2"]), output_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()  # nothing written, the base never evaluated under "saved"


def test_saved_model_with_kv_heads_is_refused_naming_both_keys(compose_cfg, tmp_path):
    overrides = ["model=saved", f"model.checkpoint={tmp_path}", "model.kv_heads=4", "limit=2"]
    expected = r"model=saved evaluates model.checkpoint .* model.kv_heads=4 does not apply"
    with pytest.raises(ValueError, match=expected):
        evaluate(compose_cfg(overrides), output_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_gqa_without_kv_heads_is_an_error_naming_the_key(compose_cfg, tmp_path):
    with pytest.raises(ValueError, match=r"model\.kv_heads is required"):
        evaluate(compose_cfg(["model=gqa", "limit=2"]), output_dir=tmp_path / "run")


def test_summary_of_a_run_outside_output_root_goes_to_its_own_directory(tmp_path):
    root = tmp_path / "outputs"
    inside, outside, sweep = root / "runs" / "r1", tmp_path / "elsewhere" / "r2", root / "multirun" / "s"
    assert report_root(inside, None, root) == root
    assert report_root(outside, None, root) == outside
    assert report_root(sweep / "0_job", sweep, root) == sweep
