"""The package's layout as its users and the other stages meet it: the public import paths that scripts
use keep working, every console script resolves, and one ``Family`` per model answers the questions the
conversion, the run stage, the roofline and the trainer ask (heads, K/V heads, head width, converted
modules, cache layout), read live from the model so a conversion shows at once."""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys
import tomllib

import pytest
import torch
from conftest import make_decoder, make_t5
from torch import nn

import gqa_eval
import gqa_eval.metrics
from gqa_eval import roofline
from gqa_eval.paths import PROJECT_ROOT
from gqa_eval.variant import Family, family_of
from gqa_eval.variant.checkpoints import load_checkpoint
from gqa_eval.variant.conversion import convert_to_gqa
from gqa_eval.variant.decoder import DecoderFamily
from gqa_eval.variant.t5 import T5Family


def test_the_package_face_is_the_stages_own_code():
    assert gqa_eval.convert_to_gqa is convert_to_gqa
    assert gqa_eval.load_checkpoint is load_checkpoint
    assert gqa_eval.family_of is family_of
    assert set(gqa_eval.__all__) <= set(dir(gqa_eval))
    for name in gqa_eval.__all__:
        assert getattr(gqa_eval, name) is not None, name
    assert callable(gqa_eval.metrics.score)
    model = make_t5(n_heads=8)
    assert gqa_eval.attention_heads(gqa_eval.convert_to_gqa(model, 2)) == (8, 2)
    assert gqa_eval.head_dim(model) == 4 and gqa_eval.architecture(model) == "t5"
    scores = gqa_eval.metrics.score(["rouge1"], ["the cat sat"], [["the cat sat"]])
    assert scores["rouge1"] == pytest.approx(100.0)
    with pytest.raises(AttributeError, match="no attribute 'convert_to_gpa'"):
        gqa_eval.convert_to_gpa  # noqa: B018


def test_importing_the_package_loads_no_torch():
    """The face is lazy: ``import gqa_eval`` (what every console script and metric module does first)
    pays for torch and transformers only when a name that needs them is used."""
    code = "import sys, gqa_eval; print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
    code = "import sys, gqa_eval; gqa_eval.convert_to_gqa; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True"]


def test_every_console_script_resolves():
    scripts = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert set(scripts) == {"gqa-eval", "gqa-eval-summary", "gqa-eval-train", "gqa-eval-convert"}
    for name, target in scripts.items():
        module, _, attr = target.partition(":")
        assert callable(getattr(importlib.import_module(module), attr)), name


@pytest.mark.parametrize(
    "make, cls, geometry",
    [
        (lambda: make_t5(n_heads=8), T5Family, (8, 8, 4, 2)),
        (lambda: make_decoder("llama", 8, 8), DecoderFamily, (8, 8, 4, 2)),
        (lambda: make_decoder("mistral", 4, 2), DecoderFamily, (4, 2, 8, 2)),
        (lambda: make_decoder("qwen2", 8, 4), DecoderFamily, (8, 4, 4, 2)),
    ],
)
def test_family_answers_from_the_model_and_follows_conversion(make, cls, geometry):
    model = make()
    family = family_of(model)
    assert type(family) is cls and family_of(family) is family
    assert (family.n_heads, family.kv_heads, family.head_dim, family.cache_layers) == geometry
    projections = family.kv_projections()
    assert len(projections) == 2 * (2 if cls is T5Family else 1) * family.cache_layers  # T5: self + cross
    assert all(p.out_features == family.kv_heads * family.head_dim for p in projections)
    convert_to_gqa(model, 1)
    assert family.kv_heads == 1  # the same object, asked after conversion
    assert all(p.out_features == family.head_dim for p in family.kv_projections())
    assert family.kv_projections()[0] is not projections[0]  # narrowed: new modules in their places
    bytes_per_token = family.kv_cache_bytes(torch.float32)["kv_cache_bytes_per_token"]
    assert bytes_per_token == family.cache_layers * 2 * 1 * family.head_dim * 4


def test_only_t5_has_prefill_only_modules_and_a_cross_cache():
    t5, llama = family_of(make_t5()), family_of(make_decoder())
    assert [m for m in t5.prefill_only_modules()] == [
        proj for block in t5.model.decoder.block for proj in (block.layer[1].EncDecAttention.k,
                                                               block.layer[1].EncDecAttention.v)
    ]  # fmt: skip
    assert llama.prefill_only_modules() == []
    assert t5.cache_contexts(5, 40) == [5, 40] and llama.cache_contexts(5, 40) == [5]
    assert set(t5.kv_cache_bytes(torch.bfloat16)) == {
        "kv_cache_bytes_per_token", "cross_kv_cache_bytes_per_source_token"
    }  # fmt: skip
    assert set(llama.kv_cache_bytes(torch.bfloat16)) == {"kv_cache_bytes_per_token"}


def test_roofline_takes_a_model_or_its_family_alike():
    model = make_decoder("llama", 8, 2)
    family = family_of(model)
    assert roofline.decode_params(model) == roofline.decode_params(family)
    assert roofline.kv_cache_bytes(model) == roofline.kv_cache_bytes(family)
    assert roofline.decode_step_cost(model, 4, 30.0) == roofline.decode_step_cost(family, 4, 30.0)


def test_unsupported_family_names_what_is_supported():
    class Other(nn.Module):
        config = type("Config", (), {"model_type": "gpt2"})()

    with pytest.raises(
        ValueError, match=r"unsupported architecture 'gpt2': gqa-eval converts bart, .*t5, llama"
    ) as err:
        family_of(Other())
    assert "has no num_key_value_heads in its config" in str(err.value)  # the rule says what is missing
    assert not isinstance(Other(), Family)


def _table_paths(readme: str) -> tuple[set[str], set[str]]:
    """(modules, folders) the stage-to-module table of docs/architecture.md ("How it works") names. A cell's
    ``gqa_eval/x/`` names a folder, ``gqa_eval/x.py`` a module, a bare ``y.py`` a module in the folder
    named last in the cell, and a dotted ``gqa_eval.x.y`` public path the module ``gqa_eval/x/y.py``."""
    section = readme.split("# How it works", 1)[1].split("\n## ", 1)[0]
    modules, folders = set(), set()
    for line in section.splitlines():
        if not line.startswith("|") or line.startswith("| ---"):
            continue
        folder = "gqa_eval/"
        for token in re.findall(r"`([^`]+)`", line.split("|")[2]):
            if token.startswith("gqa_eval/") and token.endswith("/"):
                folder = token
                folders.add(token.rstrip("/"))
            elif token.startswith("gqa_eval/") and token.endswith(".py"):
                folder = token.rsplit("/", 1)[0] + "/"
                modules.add(token)
            elif re.fullmatch(r"\w+\.py", token):
                modules.add(folder + token)
            elif re.fullmatch(r"gqa_eval(\.\w+)+", token):
                parts = token.split(".")
                while parts and not (PROJECT_ROOT / ("/".join(parts) + ".py")).is_file():
                    parts.pop()  # gqa_eval.variant.checkpoints.load_checkpoint -> its module
                if parts:
                    modules.add("/".join(parts) + ".py")
    return modules, folders


def test_readme_stage_table_matches_the_tree():
    modules, folders = _table_paths((PROJECT_ROOT / "docs" / "architecture.md").read_text(encoding="utf-8"))
    tree = {
        str(p.relative_to(PROJECT_ROOT))
        for p in (PROJECT_ROOT / "gqa_eval").rglob("*.py")
        if p.name != "__init__.py"
    }
    # a folder named without modules (gqa_eval/synthetic/) stands for all of them; one whose modules are
    # named must name each
    whole = {f for f in folders if not any(m.startswith(f + "/") for m in modules)}
    missing = sorted(m for m in tree if m not in modules and m.rsplit("/", 1)[0] not in whole)
    assert not missing, f"modules docs/architecture.md's stage table does not name: {missing}"
    gone = sorted(m for m in modules if m not in tree) + sorted(
        f for f in folders if not (PROJECT_ROOT / f / "__init__.py").is_file()
    )
    assert not gone, f"docs/architecture.md's stage table names what is not in the tree: {gone}"


def test_readme_stays_a_front_page():
    """README.md holds the tool, the two set-up commands, usage and outputs; the rest lives in docs/."""
    lines = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 300, f"README.md has {len(lines)} lines; move detail to docs/ (at most 300)"


ENTRY_POINT_LINES = 60  # issue #24: an entry point is a short list of named steps


def _body_lines(source: str, name: str) -> int:
    """Lines of the module-level function ``name`` in ``source``, from its docstring to its last line
    (the signature, one parameter a line under ruff format, not counted)."""
    fn = next(n for n in ast.parse(source).body if isinstance(n, ast.FunctionDef) and n.name == name)
    return fn.end_lineno - fn.body[0].lineno + 1


@pytest.mark.parametrize(("module", "name"), [("generation", "generate"), ("evaluate", "evaluate")])
def test_the_stage_entry_points_stay_a_list_of_named_steps(module, name):
    """``generate()`` and ``evaluate()`` read top to bottom as the stage's steps, each a named function
    whose docstring says why; a step written inline again shows here."""
    source = (PROJECT_ROOT / "gqa_eval" / f"{module}.py").read_text(encoding="utf-8")
    lines = _body_lines(source, name)
    assert lines <= ENTRY_POINT_LINES, (
        f"gqa_eval/{module}.py: {name}() is {lines} lines (docstring included; at most {ENTRY_POINT_LINES}): "
        "move a step into a named function"
    )
