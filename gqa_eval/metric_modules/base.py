"""The `evaluate.Metric` that gqa-eval's evaluate modules share: input format and option checks."""

from __future__ import annotations

import datasets
import evaluate

from gqa_eval.metric_modules import OPTIONS


def _as_list(reference):
    return [reference] if isinstance(reference, str) else reference


class GqaMetric(evaluate.Metric):
    """An evaluate.Metric whose references are one string or a list of strings per example, mixed freely.

    evaluate fixes a module's input format from the first example it sees, and then reads a later
    string as a list of characters (or a later list as its repr): a string reference becomes a
    one-element list here, before evaluate stores it, so the stored format is always a list of strings.
    A None prediction becomes "" (what gqa_eval.metrics.score makes of it; evaluate refuses a None).
    """

    FEATURES = datasets.Features(
        {"predictions": datasets.Value("string"), "references": datasets.Sequence(datasets.Value("string"))}
    )

    # what each module's _info says of it (set in the module's class)
    DESCRIPTION = CITATION = INPUTS = ""
    CODEBASE_URLS: list[str] = []
    REFERENCE_URLS: list[str] = []

    def _info(self):
        return evaluate.MetricInfo(
            description=self.DESCRIPTION,
            citation=self.CITATION,
            inputs_description=self.INPUTS,
            features=self.FEATURES,
            codebase_urls=self.CODEBASE_URLS,
            reference_urls=self.REFERENCE_URLS,
        )

    # evaluate appends the module's inputs_description to these two docstrings: they must be strings.
    def add_batch(self, *, predictions=None, references=None, **kwargs):
        """Add a batch of predictions and references (one string or a list of strings each).\n"""
        if predictions is not None:
            predictions = ["" if p is None else p for p in predictions]
        if references is not None:
            references = [_as_list(r) for r in references]
        return super().add_batch(predictions=predictions, references=references, **kwargs)

    def add(self, *, prediction=None, reference=None, **kwargs):
        """Add one prediction and its reference (one string or a list of strings).\n"""
        prediction = "" if prediction is None else prediction
        return super().add(prediction=prediction, reference=_as_list(reference), **kwargs)

    def _check_other_options(self, other: dict) -> None:
        """Reject keywords no gqa-eval module takes (evaluate.combine passes every module all of them)."""
        known = {option for options in OPTIONS.values() for option in options}
        unknown = sorted(set(other) - known)
        if unknown:
            raise TypeError(
                f"{self.name}.compute() got unknown option(s) {unknown}; it takes {list(OPTIONS[self.name])}"
            )
