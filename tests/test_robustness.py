"""Nothing lost, nothing unsafe: resume after a kill, fingerprint checks, failing sweep jobs, one clear
error per bad input with no result written, and safe checkpoint loading."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from conftest import GQA_EVAL, run_gqa_eval
from conftest import read_predictions as rows

from gqa_eval.evaluate import evaluate
from gqa_eval.paths import PROJECT_ROOT
from gqa_eval.resume import ResumeError
from gqa_eval.variant.checkpoints import CheckpointError, load_checkpoint

TINY = PROJECT_ROOT / "evals" / "checkpoints" / "tiny_t5"
QUICK = ["task=wmt_en_de", "limit=4", "task.max_new_tokens=6", "batch_size=2"]


def test_killed_run_resumes_to_identical_results(tmp_path):
    args = ["model=gqa4", "task=cnn_dm", "limit=8", "batch_size=1", "task.max_new_tokens=64"]
    clean = run_gqa_eval(*args, f"hydra.run.dir={tmp_path / 'clean'}", "progress=false")
    assert clean.returncode == 0, clean.stderr
    run_dir = tmp_path / "killed"
    proc = subprocess.Popen([GQA_EVAL, "progress=false", *args, f"hydra.run.dir={run_dir}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        pred = run_dir / "predictions.jsonl"
        if pred.exists() and pred.read_text().count("\n") >= 2:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = len(rows(run_dir))
    assert 2 <= partial < 8 and not (run_dir / "result.json").exists()
    resumed = run_gqa_eval(*args, f"hydra.run.dir={run_dir}", "progress=false")
    assert resumed.returncode == 0, resumed.stderr
    got, want = (
        json.loads((run_dir / "result.json").read_text()),
        json.loads((tmp_path / "clean/result.json").read_text()),
    )
    assert got["metrics"] == want["metrics"] and got["n_samples"] == want["n_samples"] == 8
    ids = [r["id"] for r in rows(run_dir)]
    assert len(ids) == 8 and len(set(ids)) == 8
    assert {r["id"]: r["prediction"] for r in rows(run_dir)} == {
        r["id"]: r["prediction"] for r in rows(tmp_path / "clean")
    }
    assert got["timing"]["partial"] is True and got["timing"]["timed_samples"] == 8 - partial


def test_torn_last_line_is_redone(compose_cfg, tmp_path):
    first = evaluate(compose_cfg(["model=mqa", *QUICK]), output_dir=tmp_path)
    lines = (tmp_path / "predictions.jsonl").read_text().splitlines(keepends=True)
    torn = "".join(lines[:2]) + lines[2][: len(lines[2]) // 2]  # killed in the middle of the third row
    (tmp_path / "predictions.jsonl").write_text(torn)
    second = evaluate(compose_cfg(["model=mqa", *QUICK]), output_dir=tmp_path)
    assert second["metrics"] == first["metrics"]
    assert sorted(r["index"] for r in rows(tmp_path)) == [0, 1, 2, 3]
    assert second["timing"]["timed_samples"] == 2


def test_fingerprint_mismatch_refuses_to_reuse(compose_cfg, tmp_path):
    evaluate(compose_cfg(["model=gqa4", *QUICK]), output_dir=tmp_path)
    before = (tmp_path / "predictions.jsonl").read_text()
    with pytest.raises(ResumeError, match=r"the variant differs \(kv_heads: 4 -> 2\)"):
        evaluate(compose_cfg(["model=gqa2", *QUICK]), output_dir=tmp_path)
    with pytest.raises(ResumeError, match=r"the generation differs \(max_new_tokens: 6 -> 7\)"):
        evaluate(compose_cfg(["model=gqa4", *QUICK, "task.max_new_tokens=7"]), output_dir=tmp_path)
    with pytest.raises(ResumeError, match="the task differs"):
        evaluate(
            compose_cfg(["model=gqa4", *QUICK, "task.input_template='translate: {source}'"]),
            output_dir=tmp_path,
        )
    with pytest.raises(FileExistsError, match="resume=false"):
        evaluate(compose_cfg(["model=gqa4", *QUICK, "resume=false"]), output_dir=tmp_path)
    assert (tmp_path / "predictions.jsonl").read_text() == before


def test_multirun_with_a_failing_job_keeps_the_others(tmp_path):
    proc = run_gqa_eval(
        "-m", "model=gqa", "model.kv_heads=3,4", *QUICK, f"output_root={tmp_path}", "progress=false"
    )
    assert proc.returncode != 0
    assert "1 job(s) failed" in proc.stderr and "kv_heads=3 does not divide" in proc.stderr
    (sweep,) = list((tmp_path / "multirun").iterdir())
    results = list(sweep.rglob("result.json"))
    errors = [json.loads(p.read_text()) for p in sweep.rglob("error.json")]
    assert len(results) == 1 and json.loads(results[0].read_text())["kv_heads"] == 4
    assert [(e["model"], e["error_type"]) for e in errors] == [("gqa3", "ValueError")]
    summary = (sweep / "summary.csv").read_text().splitlines()
    assert len(summary) == 2 and "gqa4" in summary[1]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["task=cnn_dn"], "Could not find 'task/cnn_dn'"),
        (["model=gqa3"], "Could not find 'model/gqa3'"),
        (["base=tiny_t6"], "Could not find 'base/tiny_t6'"),
        (["model=gqa", "model.kv_heads=32"], "kv_heads=32 is larger than the model's 16 key/value heads"),
        (["limit=0"], "limit must be a positive whole number of examples"),
        (["base.path=does/not/exist"], "checkpoint path .*does/not/exist does not exist"),
        (["dtype=float16", "device=cpu"], "dtype=float16 on device=cpu is not supported"),
        (["task.metrics=[rouge1,bleu4]"], r"unknown metric\(s\) \['bleu4'\]"),
    ],
)  # fmt: skip
def test_bad_input_is_one_clear_error(tmp_path, overrides, message):
    proc = (
        run_gqa_eval(*overrides, "limit=2", f"output_root={tmp_path}", "progress=false")
        if "limit=0" not in overrides
        else run_gqa_eval(*overrides, f"output_root={tmp_path}", "progress=false")
    )
    assert proc.returncode != 0
    import re

    assert re.search(message, proc.stderr), proc.stderr
    if "Could not find" in message:
        assert "Available options" in proc.stderr  # Hydra lists the choices
    else:
        assert "Traceback" not in proc.stderr
    assert not list(tmp_path.rglob("result.json"))


def _checkpoint_copy(tmp_path: Path) -> Path:
    dst = tmp_path / "ckpt"
    shutil.copytree(TINY, dst)
    return dst


def test_pickle_only_checkpoint_refused_unless_allowed(tmp_path):
    ckpt = _checkpoint_copy(tmp_path)
    model, _ = load_checkpoint(str(ckpt))
    (ckpt / "model.safetensors").unlink()
    torch.save(model.state_dict(), ckpt / "pytorch_model.bin")
    with pytest.raises(
        CheckpointError, match=r"only pickle weights \(pytorch_model.bin\).*base.allow_pickle=true"
    ):
        load_checkpoint(str(ckpt))
    allowed, _ = load_checkpoint(str(ckpt), allow_pickle=True)
    ids = torch.tensor([[5, 6, 7, 1]])
    with torch.no_grad():
        assert torch.equal(allowed(input_ids=ids, decoder_input_ids=ids).logits,
                           model(input_ids=ids, decoder_input_ids=ids).logits)  # fmt: skip


def test_corrupt_safetensors_named(tmp_path):
    ckpt = _checkpoint_copy(tmp_path)
    weights = ckpt / "model.safetensors"
    os.truncate(weights, weights.stat().st_size // 2)
    with pytest.raises(
        CheckpointError, match="model.safetensors is not a valid safetensors file.*truncated or corrupt"
    ):
        load_checkpoint(str(ckpt))


def test_remote_code_is_never_run_by_default(tmp_path):
    ckpt = _checkpoint_copy(tmp_path)
    config = json.loads((ckpt / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "evil.EvilConfig"}
    (ckpt / "config.json").write_text(json.dumps(config))
    (ckpt / "evil.py").write_text("raise SystemExit('remote code ran')\n")
    model, _ = load_checkpoint(str(ckpt))  # loads the built-in T5 classes; evil.py is never imported
    assert type(model).__name__ == "T5ForConditionalGeneration"


def test_empty_split_and_unwritable_output(compose_cfg, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "validation.jsonl").write_text("")
    with pytest.raises(ValueError, match="is empty|cannot load split"):
        evaluate(
            compose_cfg(["task=cnn_dm", f"task.data.path={data}", "limit=2"]), output_dir=tmp_path / "run"
        )
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(PermissionError, match="cannot write to the output directory"):
        evaluate(compose_cfg([*QUICK]), output_dir=blocker / "run")
    assert not list(tmp_path.rglob("result.json"))


def test_non_finite_logits_stop_the_run(compose_cfg, tmp_path):
    ckpt = _checkpoint_copy(tmp_path)
    model, tokenizer = load_checkpoint(str(ckpt))
    with torch.no_grad():
        model.lm_head.weight[7] = float("nan")
    model.save_pretrained(ckpt)
    with pytest.raises(FloatingPointError, match="non-finite .*logits.*try dtype=float32"):
        evaluate(compose_cfg([f"base.path={ckpt}", *QUICK]), output_dir=tmp_path / "run")
    assert not (tmp_path / "run" / "result.json").exists()
