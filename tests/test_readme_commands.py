"""Every gqa-eval command the README and its docs/ pages show runs as written (with a small limit
appended), in their order (README.md, then the pages by name), in one scratch working directory.
Commands that need a model hub, a hub dataset or a user's own files cannot run offline: they must fail
in one line that says so, never with a config error or a traceback. The README links every docs/ page,
and every relative link on these pages names a file of the checkout."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from gqa_eval.paths import PROJECT_ROOT

BIN = Path(sys.executable).parent
COMMAND = re.compile(r"^\s*(?:\.venv/bin/)?(gqa-eval(?:-summary|-convert|-train)?)\s+(?!:)(.*)$")
# Appended to evaluation commands (Hydra: the last value wins): a tiny, quick version of the same run.
SMALL = ["limit=1", "task.max_new_tokens=2", "timing.roofline=false", "progress=false"]
# Uptraining (uptrain.alpha) sets its steps from the base's: counted as 40, alpha 0.05 trains 2 steps.
QUICK_UPTRAINING = "uptrain.base_steps=40"
OFFLINE_BASES = {"tiny_t5", "tiny_t5_plain", "tiny_llama"}
# What a command that needs the outside world may say instead of running (one line, no traceback).
OFFLINE_FAILURE = re.compile(r"hub|offline|does not exist|no such|not a directory|cannot load", re.IGNORECASE)


# docs/benchmarks_e989b53.md is a historical record of code that has changed since: its commands are not run.
HISTORICAL_DOCS = {"benchmarks_e989b53.md"}


def documentation_pages() -> list[Path]:
    """README.md, then every page under docs/ (the historical record excepted), by name."""
    pages = sorted(p for p in (PROJECT_ROOT / "docs").glob("*.md") if p.name not in HISTORICAL_DOCS)
    return [PROJECT_ROOT / "README.md", *pages]


def readme_commands() -> list[tuple[str, str, list[str]]]:
    """(file:line, program, arguments) of every console command in README.md and the docs/ pages, in
    order: README.md first, then the pages by name, each top to bottom."""
    found = []
    for page in documentation_pages():
        where = page.relative_to(PROJECT_ROOT).as_posix()
        for n, line in enumerate(page.read_text().splitlines(), 1):
            match = COMMAND.match(line)
            if not match:
                continue
            args = shlex.split(match.group(2), comments=True)
            found.append((f"{where}:{n}", match.group(1), args))
    return found


LINK = re.compile(r"\]\(([^)\s]+)\)")


def test_readme_links_every_docs_page_and_every_link_resolves():
    readme = (PROJECT_ROOT / "README.md").read_text()
    unlinked = [p.name for p in documentation_pages()[1:] if f"(docs/{p.name})" not in readme]
    assert not unlinked, f"docs pages the README does not link: {unlinked}"
    broken = []
    for page in documentation_pages():
        for target in LINK.findall(page.read_text()):
            path = target.split("#")[0]
            if path and "://" not in path and not (page.parent / path).exists():
                broken.append(f"{page.relative_to(PROJECT_ROOT).as_posix()}: {target}")
    assert not broken, f"links to files that do not exist: {broken}"


def needs_outside(args: list[str], cwd: Path | None = None) -> bool:
    """True when a command names a hub checkpoint, a hub dataset, a path outside this checkout, or a
    checkpoint that no earlier README command could make offline (it does not exist in ``cwd``)."""
    for arg in args:
        if arg.startswith("/"):  # a folder of the user's (gqa-eval-summary /scratch/run-a)
            return True
        key, _, value = arg.partition("=")
        if key == "model.checkpoint" and cwd is not None and not (cwd / value).exists():
            return True
        if key == "base" and value not in OFFLINE_BASES:
            return True
        if key in ("base.path", "task.data.path", "model.checkpoint") and value.startswith("/"):
            return True
        if key == "base.path" and not value.startswith(("evals/", "./", "/")):
            return True  # a hub id
        if key == "task.data.source" and value == "hub":
            return True
    return False


def _run(program: str, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    if program == "gqa-eval":
        args = [*args, *SMALL, QUICK_UPTRAINING]
    elif program == "gqa-eval-train":
        args = [*args, "steps=2", QUICK_UPTRAINING]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    return subprocess.run(
        [str(BIN / program), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900
    )


def test_readme_has_the_commands_it_promises():
    programs = {program for _, program, _ in readme_commands()}
    assert {"gqa-eval", "gqa-eval-summary", "gqa-eval-convert"} <= programs


def test_every_readme_command_runs_as_written(tmp_path):
    failures = []
    for line, program, args in readme_commands():
        proc = _run(program, args, tmp_path)
        shown = f"{line}: {program} {' '.join(args)}"
        if proc.returncode == 0:
            continue
        last = (proc.stderr.strip().splitlines() or [""])[-1]
        one_line = last.startswith(f"{program}: ") and "Traceback" not in proc.stderr
        if not (needs_outside(args, tmp_path) and one_line and OFFLINE_FAILURE.search(last)):
            failures.append(f"{shown}\n    exit {proc.returncode}: {proc.stderr.strip()[-600:]}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize(
    ("args", "outside"),
    [
        (["base=t5_v1_1_large", "model=gqa8"], True),
        (["base.path=Qwen/Qwen2.5-0.5B"], True),
        (["task.data.source=hub"], True),
        (["model=gqa8", "task=cnn_dm"], False),
        (["base=tiny_llama", "model.checkpoint=outputs/train/x"], False),
        (["outputs/", "/scratch/run-a/", "--out", "report/"], True),
    ],
)
def test_needs_outside_classifies_commands(args, outside, tmp_path):
    assert needs_outside(args) is outside
    if "model.checkpoint=outputs/train/x" in args:  # made by no earlier command: the hub's (or nobody's)
        assert needs_outside(args, tmp_path) is True
