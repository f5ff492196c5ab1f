"""Checkpoint loading (local path or hub id, offline and unreachable hub), devices, and file modes.

The hub is never contacted: hub ids load from a hub cache built in tmp_path (the ``models--org--name``
layout huggingface_hub reads with ``HF_HUB_OFFLINE=1``), and ``HF_ENDPOINT`` points at a closed local
port or at a stub server on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from conftest import closed_port, make_decoder, make_t5

from gqa_eval import io
from gqa_eval.paths import PROJECT_ROOT, is_hub_id
from gqa_eval.report import summary
from gqa_eval.resume import file_sha256
from gqa_eval.variant.checkpoints import (
    CheckpointError,
    checkpoint_source,
    load_checkpoint,
    resolve_device,
    resolved_revision,
)
from gqa_eval.variant.conversion import save_converted

TINY_T5 = PROJECT_ROOT / "evals" / "checkpoints" / "tiny_t5"
SHA_A, SHA_B = "a" * 40, "b" * 40


# --- the local-or-hub rule ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["Qwen/Qwen2.5-0.5B", "meta-llama/Llama-3.1-8B", "mistralai/Mistral-7B-v0.1", "google/t5-v1_1-large",
     "gpt2", "t5-small"],
)  # fmt: skip
def test_hub_ids_with_dots_and_bare_legacy_names_are_hub_ids(name):
    assert is_hub_id(name)
    assert checkpoint_source(name) == name  # no such local path here, so it goes to the hub


@pytest.mark.parametrize("name", ["./ckpt", "/data/ckpt", "~/ckpt", "does/not/exist", "a--b/c", "a b"])
def test_paths_and_malformed_ids_are_not_hub_ids(name):
    assert not is_hub_id(name)
    with pytest.raises(CheckpointError, match=r"does not exist .* is not a hub id; expected a directory"):
        checkpoint_source(name)
    with pytest.raises(CheckpointError, match="the checkpoint path is empty"):
        checkpoint_source("")


def test_an_existing_local_path_wins_over_a_hub_id(tmp_path, monkeypatch):
    local = tmp_path / "Qwen" / "Qwen2.5-0.5B"
    local.mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert checkpoint_source("Qwen/Qwen2.5-0.5B") == local
    assert checkpoint_source("evals/checkpoints/tiny_t5") == TINY_T5  # the project's, from any cwd
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match="is not a directory"):
        load_checkpoint("model.safetensors")


# --- hub ids through a local hub cache ------------------------------------------------------------


def add_snapshot(cache: Path, repo_id: str, model, sha: str, refs: tuple[str, ...] = ("main",)) -> Path:
    """Put ``model`` (and the bundled tokenizer) into ``cache`` as the hub would: a snapshot per commit,
    and ``refs/<branch or tag>`` files holding the commit."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / sha
    model.save_pretrained(snapshot)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(TINY_T5 / name, snapshot / name)
    (repo / "refs").mkdir(exist_ok=True)
    for ref in refs:
        (repo / "refs" / ref).write_text(sha)  # no newline: huggingface_hub reads the file as the sha
    return snapshot


def _first_weight(model) -> torch.Tensor:
    return next(model.parameters()).detach()


@pytest.mark.parametrize(
    "repo_id, make",
    [("org/Tiny-0.5B", lambda seed: make_decoder("qwen2", n_heads=4, kv_heads=2, seed=seed)),
     ("org/tiny-t5.v1_1", lambda seed: make_t5(n_heads=4, seed=seed)),
     ("org/tiny", lambda seed: make_t5(n_heads=4, seed=seed)),
     ("tiny-legacy", lambda seed: make_t5(n_heads=4, seed=seed))],
)  # fmt: skip
def test_hub_ids_load_offline_from_the_cache_at_their_revision(hub, monkeypatch, repo_id, make):
    main, tagged = make(0), make(1)
    add_snapshot(hub, repo_id, main, SHA_A)
    add_snapshot(hub, repo_id, tagged, SHA_B, refs=("v2",))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # set after import: read by gqa_eval itself
    for revision, expected, sha in [(None, main, SHA_A), ("main", main, SHA_A), ("v2", tagged, SHA_B),
                                    (SHA_B, tagged, SHA_B)]:  # fmt: skip
        model, tokenizer = load_checkpoint(repo_id, revision=revision)
        assert torch.equal(_first_weight(model), _first_weight(expected)), revision
        assert tokenizer("hello").input_ids
        assert resolved_revision(repo_id, revision, model.config) == sha  # result.json's resolved_revision
    with pytest.raises(CheckpointError, match=f"HF_HUB_OFFLINE is set .* does not hold {repo_id}"):
        load_checkpoint(repo_id, revision="v3")


@pytest.mark.parametrize("when", ["set before import", "set after import"])
def test_offline_and_not_cached_fails_in_one_line(hub, monkeypatch, when):
    from huggingface_hub import constants

    if when == "set before import":
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    else:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError) as err:
        load_checkpoint("Qwen/Qwen2.5-0.5B")
    assert "\n" not in str(err.value)
    assert f"the hub cache ({hub}) does not hold Qwen/Qwen2.5-0.5B: set base.path" in str(err.value)


def test_unreachable_hub_fails_at_once_or_uses_the_cache(hub, caplog):
    start = time.perf_counter()
    with pytest.raises(CheckpointError) as err:
        load_checkpoint("Qwen/Qwen2.5-0.5B", revision="v1")
    assert time.perf_counter() - start < 10  # transformers alone retries for ~29 s
    message = str(err.value)
    assert "\n" not in message
    assert "cannot reach the Hugging Face hub (http://127.0.0.1:" in message
    assert "to fetch Qwen/Qwen2.5-0.5B (revision v1) (offline?): set base.path to a local copy" in message
    model = make_t5(n_heads=4)
    add_snapshot(hub, "org/Cached-1.5B", model, SHA_A)
    loaded, _ = load_checkpoint("org/Cached-1.5B")  # not offline, hub down, cache has it: use it
    assert torch.equal(_first_weight(loaded), _first_weight(model))
    assert "loading org/Cached-1.5B from the cache" in caplog.text


class _Hub(BaseHTTPRequestHandler):
    """Answers every model-info request the way the hub does for a missing repo or revision."""

    def do_GET(self):  # noqa: N802 (the http.server name)
        self.send_response(404)
        self.send_header(
            "X-Error-Code", "RevisionNotFound" if "/revision/nope" in self.path else "RepoNotFound"
        )
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"error": "not found"}')

    def log_message(self, *args):
        pass


@pytest.mark.parametrize(
    "revision, message",
    [(None, r"no local path .*org/Missing-0.5B and no hub model org/Missing-0.5B \(or it is private"),
     ("nope", r"the hub model org/Missing-0.5B has no revision 'nope'; give a branch, tag or commit")],
)  # fmt: skip
def test_missing_hub_model_or_revision_named(hub, monkeypatch, revision, message):
    from huggingface_hub import constants

    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{server.server_port}")
        with pytest.raises(CheckpointError, match=message):
            load_checkpoint("org/Missing-0.5B", revision=revision)
    finally:
        server.shutdown()
        server.server_close()


def test_hub_loading_stays_safe(hub, monkeypatch, tmp_path):
    """From the hub as from a directory: pickle weights only with allow_pickle, no remote code."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = make_t5(n_heads=4)
    snapshot = add_snapshot(hub, "org/Pickled-0.5B", model, SHA_A)
    (snapshot / "model.safetensors").unlink()
    torch.save(model.state_dict(), snapshot / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="cannot load checkpoint org/Pickled-0.5B"):
        load_checkpoint("org/Pickled-0.5B")
    allowed, _ = load_checkpoint("org/Pickled-0.5B", allow_pickle=True)
    assert torch.equal(_first_weight(allowed), _first_weight(model))

    snapshot = add_snapshot(hub, "org/Evil-0.5B", model, SHA_A)
    config = json.loads((snapshot / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "evil.EvilConfig"}
    (snapshot / "config.json").write_text(json.dumps(config))
    marker = tmp_path / "remote-code-ran"
    (snapshot / "evil.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    loaded, _ = load_checkpoint("org/Evil-0.5B")
    assert type(loaded).__name__ == "T5ForConditionalGeneration" and not marker.exists()


_PROBE = """
import json, sys, time
from huggingface_hub import HfApi
from transformers import AutoConfig, AutoTokenizer  # imported first: only the loading is timed
from gqa_eval.variant.checkpoints import CheckpointError, load_checkpoint
for repo_id in sys.argv[1:]:
    start = time.perf_counter()
    try:
        load_checkpoint(repo_id, revision="v1")
        outcome = "loaded"
    except CheckpointError as err:
        outcome = str(err)
    print(json.dumps({"seconds": time.perf_counter() - start, "outcome": outcome}))
"""


def test_real_environment_variables(tmp_path):
    """What a user sets before the run, read by huggingface_hub at import: with HF_ENDPOINT unreachable, a
    model not in the cache fails within seconds and without retry warnings; one in the cache under
    HF_HOME (HF_HOME/hub/models--org--name) loads from there."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    env.update(HF_HOME=str(tmp_path / "hf"), HF_ENDPOINT=f"http://127.0.0.1:{closed_port()}")
    env.update(NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
    add_snapshot(tmp_path / "hf" / "hub", "org/Tiny-0.5B", make_t5(n_heads=4), SHA_A, refs=("main", "v1"))
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, "org/Missing-0.5B", "org/Tiny-0.5B"], env=env, capture_output=True,
        text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    missing, cached = (json.loads(line) for line in proc.stdout.strip().splitlines()[-2:])
    assert missing["outcome"].startswith("cannot reach the Hugging Face hub (http://127.0.0.1:")
    assert missing["seconds"] < 10  # transformers alone retries for ~29 s
    assert "Retrying" not in proc.stderr
    assert cached["outcome"] == "loaded"
    assert "loading org/Tiny-0.5B from the cache" in proc.stderr


# --- devices --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["tpu", "cuda:x", "", "gpu0", "meta"])
def test_unknown_devices_named_in_one_line(name):
    with pytest.raises(ValueError, match=r"choose one of auto, cpu, cuda, cuda:N or mps") as err:
        resolve_device(name)
    assert "\n" not in str(err.value)


def test_available_devices_resolve():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_asked_for_without_cuda():
    with pytest.raises(ValueError, match="CUDA is not available here; use device=cpu or auto"):
        resolve_device("cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_index_beyond_the_devices():
    count = torch.cuda.device_count()
    assert resolve_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(ValueError, match=f"has {count} CUDA device"):
        resolve_device(f"cuda:{count}")


# --- file modes -----------------------------------------------------------------------------------


@pytest.fixture(params=[0o022, 0o077], ids=["umask022", "umask077"])
def umask(request):
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_write_atomic_honours_the_umask(tmp_path, umask):
    target = tmp_path / "out" / "result.json"
    io.write_atomic(target, '{"score": 1}\n')
    assert _mode(target) == 0o666 & ~umask == io.file_mode()
    assert _mode(target) == (0o644 if umask == 0o022 else 0o600)
    io.write_atomic(target, b"replaced")
    assert target.read_bytes() == b"replaced" and _mode(target) == 0o666 & ~umask
    with pytest.raises(TypeError):
        io.write_atomic(target, 42)  # fails mid-write: the old file stays, the temp file goes
    assert target.read_bytes() == b"replaced"
    assert sorted(p.name for p in target.parent.iterdir()) == ["result.json"]


def test_results_summary_and_caches_honour_the_umask(tmp_path, umask, monkeypatch):
    assert summary.write_atomic is io.write_atomic  # result.json, error.json and the report use it
    run = tmp_path / "runs" / "one"
    io.write_atomic(run / "result.json", json.dumps({"model": "mha", "task": "cnn_dm", "score": 1.0}))
    written = [p for p in summary.write_report(tmp_path / "runs").files if p.exists()]
    assert written and {_mode(p) for p in written} == {0o666 & ~umask}, written
    monkeypatch.setenv("GQA_EVAL_CACHE_DIR", str(tmp_path / "cache"))
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"weights")
    file_sha256(weights)
    assert _mode(tmp_path / "cache" / "file_hashes.json") == 0o666 & ~umask


def test_converted_checkpoint_files_honour_the_umask(tmp_path, umask, t5_tokenizer):
    out = save_converted(make_t5(n_heads=4), t5_tokenizer, tmp_path / "gqa")
    modes = {p.name: _mode(p) for p in out.iterdir()}
    assert modes["model.safetensors"] == 0o666 & ~umask
    assert set(modes.values()) == {0o666 & ~umask}, modes
