"""gqa-eval's metrics as 🤗 evaluate modules, loadable offline from the installed package.

Each module is a thin `evaluate.Metric` whose `_compute` calls `gqa_eval.metrics.score`, so the
numbers are those of a gqa-eval run (0-100 scale, ROUGE as a plain mean of F-measures, rougeLsum on
Punkt-split sentences, BLEU from sacrebleu, TriviaQA with the official normalisation):

    import evaluate
    from gqa_eval.metric_modules import module_path

    rouge = evaluate.load(module_path("gqa_rouge"))  # or gqa_eval.metric_modules.load("gqa_rouge")
    rouge.compute(predictions=["the cat sat"], references=[["a cat sat", "the cat was sitting"]])

`evaluate.load` on a path reads the script from disk and needs no network (HF_HUB_OFFLINE=1 is fine).
References are one string or a list of strings per example (see `base.GqaMetric`). See
docs/tasks_and_metrics.md.
"""

from __future__ import annotations

from pathlib import Path

NAMES = ("gqa_rouge", "gqa_bleu", "gqa_trivia_qa")

# The keyword arguments each module's `compute` takes (defaults: gqa_eval.metrics.DEFAULT_OPTIONS, the
# values conf/task/*.yaml use). evaluate.combine passes every keyword to every module it combines, so a
# module ignores the options of the others and rejects only names that no module knows.
OPTIONS: dict[str, tuple[str, ...]] = {
    "gqa_rouge": ("rouge_types", "use_stemmer", "n_jobs"),
    "gqa_bleu": ("tokenize", "smooth_method", "lowercase"),
    "gqa_trivia_qa": (),
}

_HERE = Path(__file__).resolve().parent


def module_path(name: str) -> str:
    """The path of a module's script, for `evaluate.load`.

    Args:
        name: One of `NAMES`.

    Returns:
        The absolute path of ``<name>/<name>.py`` inside the installed package.
    """
    if name not in NAMES:
        raise ValueError(f"unknown gqa-eval evaluate module {name!r}; known: {list(NAMES)}")
    return str(_HERE / name / f"{name}.py")


def load(name: str, **kwargs):
    """`evaluate.load(module_path(name), **kwargs)`.

    Args:
        name: One of `NAMES`.
        **kwargs: Passed to `evaluate.load` (experiment_id, keep_in_memory, num_process, ...).

    Returns:
        The `evaluate.EvaluationModule`.
    """
    import evaluate

    return evaluate.load(module_path(name), **kwargs)
