"""Shared fixtures and helpers: tiny in-process models whose outputs vary, the bundled tokenizer, Hydra
composition, task configs, the console script run as a subprocess, and readers of the files a run writes."""

from __future__ import annotations

import copy
import csv
import json
import logging
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf
from transformers import LlamaConfig, LlamaForCausalLM, T5Config, T5ForConditionalGeneration

import gqa_eval.cli  # noqa: F401  (registers the config resolvers)

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")
TINY_T5 = Path(CONF_DIR).parent / "evals" / "checkpoints" / "tiny_t5"
GQA_EVAL = str(Path(sys.executable).parent / "gqa-eval")  # this environment's console script


def _absl_handler_to_real_stderr() -> None:
    """rouge-score logs through absl, whose handler keeps the ``sys.stderr`` of the moment absl is imported
    (under pytest: a capture file). Hydra's logging set-up, run in-process by the CLI tests, closes every
    handler ever made, and absl's closes its stream unless it is the current ``sys.stderr``; with
    ``capsys`` active that is another object, so pytest's own capture file would be closed ("lost
    sys.stderr"). Pointing the handler at the real stderr, which absl never closes, avoids it."""
    try:
        from absl import logging as absl_logging
    except ImportError:
        return
    absl_logging.get_absl_handler().python_handler.stream = sys.__stderr__


_absl_handler_to_real_stderr()
VOCAB = 97


def spread_weights(model: torch.nn.Module, std: float = 0.3, seed: int = 0) -> torch.nn.Module:
    """Re-initialise every weight from N(0, std): default-init tiny models emit one constant token, so
    generate() comparisons on them would prove nothing."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * std)
    return model.eval()


def make_t5(n_heads: int = 8, seed: int = 0) -> T5ForConditionalGeneration:
    config = T5Config(
        vocab_size=VOCAB, d_model=32, d_kv=4, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=n_heads,
        feed_forward_proj="gated-gelu", tie_word_embeddings=False, dropout_rate=0.0,
        pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
    )  # fmt: skip
    torch.manual_seed(seed)
    return spread_weights(T5ForConditionalGeneration(config), seed=seed)


def make_decoder(family: str = "llama", n_heads: int = 8, kv_heads: int = 8, seed: int = 0, **config):
    """A tiny Llama-family causal LM (llama, mistral or qwen2); ``config`` overrides its config values."""
    import transformers

    cfg_cls, model_cls = {
        "llama": (LlamaConfig, LlamaForCausalLM),
        "mistral": (transformers.MistralConfig, transformers.MistralForCausalLM),
        "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM),
    }[family]
    values = dict(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=n_heads, num_key_value_heads=kv_heads, head_dim=32 // n_heads,
        max_position_embeddings=128, pad_token_id=0, bos_token_id=2, eos_token_id=1,
        tie_word_embeddings=False,
    )  # fmt: skip
    torch.manual_seed(seed)
    return spread_weights(model_cls(cfg_cls(**{**values, **config})), seed=seed)


def repeated_t5(converted, original):
    """An MHA copy of ``original`` whose decoder K/V heads carry their group's converted weights."""
    from gqa_eval import t5_decoder_attentions

    reference = copy.deepcopy(original)
    for src, dst in zip(t5_decoder_attentions(converted), t5_decoder_attentions(reference), strict=True):
        for proj in ("k", "v"):
            w = getattr(src, proj).weight.data  # (G * D, d_model)
            g = w.shape[0] // dst.key_value_proj_dim
            rep = dst.n_heads // g
            w = w.view(g, 1, dst.key_value_proj_dim, -1).expand(g, rep, dst.key_value_proj_dim, w.shape[1])
            getattr(dst, proj).weight.data = w.reshape(dst.inner_dim, -1).clone()
    return reference


def seqs(n: int, length: int, seed: int = 0) -> list[list[int]]:
    """``n`` token-id inputs of lengths ``length``, ``length - 1``, ..., each ending in EOS (id 1)."""
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(3, 90, (length - i,), generator=gen).tolist() + [1] for i in range(n)]


@pytest.fixture(scope="module")
def t5_tokenizer():
    """The bundled tiny_t5 tokenizer."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(TINY_T5)


@pytest.fixture(scope="module")
def tokenizer(t5_tokenizer):
    """The tokenizer of the tiny models: tiny_t5's (a module may define its own ``tokenizer`` to use
    another)."""
    return t5_tokenizer


@pytest.fixture(autouse=True)
def _rates_cache(tmp_path_factory, monkeypatch):
    """Hardware rates are measured once per test session, into a temporary cache, not the user's."""
    monkeypatch.setenv("GQA_EVAL_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "gqa_eval_cache"))


@pytest.fixture
def batch() -> dict[str, torch.Tensor]:
    """A padded batch of source ids (row 0 padded) and decoder ids."""
    gen = torch.Generator().manual_seed(1)
    input_ids = torch.randint(3, VOCAB, (3, 11), generator=gen)
    mask = torch.ones_like(input_ids)
    mask[0, 7:] = 0
    input_ids[0, 7:] = 0
    return {
        "input_ids": input_ids,
        "attention_mask": mask,
        "decoder_input_ids": torch.randint(3, VOCAB, (3, 6), generator=gen),
    }


def compose_config(config_name: str = "config", overrides=(), return_hydra_config: bool = False):
    """One config of conf/ composed by Hydra, its global state cleared before and after."""
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(version_base="1.3", config_dir=CONF_DIR):
            return compose(config_name, overrides=list(overrides), return_hydra_config=return_hydra_config)
    finally:
        GlobalHydra.instance().clear()


@pytest.fixture
def compose_cfg(tmp_path):
    """compose(overrides) -> the app's config, with outputs under tmp_path."""

    def _compose(overrides: list[str] = (), config_name: str = "config"):
        if config_name == "config":
            overrides = [f"output_root={tmp_path}", "progress=false", *overrides]
        return compose_config(config_name, overrides)

    yield _compose
    GlobalHydra.instance().clear()


def task_cfg(name: str, resolve: bool = False, **changes) -> dict:
    """conf/task/<name>.yaml as a plain dict (its interpolations resolved if ``resolve``), with
    ``changes`` set by dotted key: ``task_cfg("cnn_dm", **{"data.path": "my_copy"})``."""
    cfg = OmegaConf.to_container(OmegaConf.load(Path(CONF_DIR) / "task" / f"{name}.yaml"), resolve=resolve)
    for dotted, value in changes.items():
        node = cfg
        *parents, last = dotted.split(".")
        for p in parents:
            node = node[p]
        node[last] = value
    return cfg


def run_gqa_eval(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """The ``gqa-eval`` console script run with ``args``; its stdout and stderr captured as text."""
    return subprocess.run([GQA_EVAL, *args], capture_output=True, text=True, timeout=timeout)


def read_csv(path: Path) -> list[dict]:
    """The rows of a CSV file (summary.csv, table.csv) as dicts of strings."""
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def read_jsonl(path: Path, encoding: str | None = None) -> list[dict]:
    """The records of a JSON-lines file, one a line."""
    with path.open(encoding=encoding) as f:
        return [json.loads(line) for line in f]


def read_predictions(run_dir: Path, encoding: str | None = None) -> list[dict]:
    """The rows of a run's predictions.jsonl, in file order."""
    return read_jsonl(run_dir / "predictions.jsonl", encoding)


@pytest.fixture
def app(monkeypatch, capsys):
    """``app(*args, entry=gqa_eval.cli.run)`` runs a console entry in this process, cleaning up what Hydra
    leaves behind in a process it does not own: ``(exit code or message, stdout)``."""
    monkeypatch.setattr(gqa_eval.cli, "FAILED", [])

    def _app(*args: str, entry=gqa_eval.cli.run) -> tuple[int | str | None, str]:
        root = logging.getLogger()
        handlers, level = root.handlers[:], root.level
        quiet = ["progress=false"] if entry is gqa_eval.cli.run else []
        monkeypatch.setattr(sys, "argv", ["gqa-eval", *args, *quiet])
        GlobalHydra.instance().clear()
        code: int | str | None = 0
        try:
            entry()
        except SystemExit as exit_:
            code = exit_.code
        finally:  # what Hydra leaves behind in a process it does not own
            GlobalHydra.instance().clear()
            HydraConfig.instance().cfg = None
            for handler in root.handlers:
                if handler not in handlers:
                    handler.close()
            root.handlers[:] = handlers
            root.setLevel(level)
            gqa_eval.cli.FAILED.clear()
        return code, capsys.readouterr().out

    return _app


def closed_port() -> int:
    """A local port nobody listens on: connecting to it is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An empty hub cache in tmp_path and an endpoint nobody listens on. huggingface_hub reads its
    environment once, at import, so its constants are patched as well as the variables."""
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    cache.mkdir()
    endpoint = f"http://127.0.0.1:{closed_port()}"
    for var, attr, value in [
        ("HF_HUB_CACHE", "HF_HUB_CACHE", str(cache)),
        ("HF_ENDPOINT", "ENDPOINT", endpoint),
    ]:
        monkeypatch.setenv(var, value)
        monkeypatch.setattr(constants, attr, value)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    return cache


class IdsTokenizer:
    """A tokenizer stand-in for generate(): predictions are the token ids as text."""

    pad_token_id, eos_token_id = 0, 1

    def decode(self, ids, skip_special_tokens=True):
        return " ".join(map(str, ids))

    def batch_decode(self, rows, skip_special_tokens=True):
        return [self.decode(r) for r in rows]
