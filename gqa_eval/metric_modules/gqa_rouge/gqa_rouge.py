"""gqa-eval's ROUGE as an evaluate module: `evaluate.load(gqa_eval.metric_modules.module_path("gqa_rouge"))`.

The scores are `gqa_eval.metrics.score` on the same strings; no scoring code lives here.
"""

from gqa_eval import metrics
from gqa_eval.metric_modules import base

_DESCRIPTION = """\
ROUGE-1/2/L/Lsum F-measures as gqa-eval computes them: google-research rouge-score, x100 (0-100 scale),
a plain mean over examples (not rouge-score's bootstrap "mid"), the max over an example's references
(score_multi), the Porter stemmer on by default (as conf/task/*.yaml), and rougeLsum on sentences split
by nltk's Punkt with the English punkt_tab model (no need to put newlines in the texts yourself).
"""

_KWARGS_DESCRIPTION = """\
Args:
    predictions: One string per example (None counts as an empty prediction).
    references: One string, or a list of strings, per example (one or the other for a whole batch).
    rouge_types: Any of "rouge1", "rouge2", "rougeL", "rougeLsum" (default: all four).
    use_stemmer: Porter-stem tokens (default True, the task configs' setting; False = T5's convention).
    n_jobs: ROUGE worker processes; None (default) runs serially below 1000 examples.
Returns:
    {rouge_type: F-measure x100} for each of rouge_types, in that order.
Examples:
    >>> rouge = evaluate.load(gqa_eval.metric_modules.module_path("gqa_rouge"))
    >>> rouge.compute(predictions=["the cat sat"], references=[["the cat sat down"]], rouge_types=["rouge1"])
    {'rouge1': 85.71428571428571}
"""

_CITATION = """\
@inproceedings{lin-2004-rouge,
    title = "{ROUGE}: A Package for Automatic Evaluation of Summaries",
    author = "Lin, Chin-Yew",
    booktitle = "Text Summarization Branches Out",
    year = "2004",
    publisher = "Association for Computational Linguistics",
    url = "https://aclanthology.org/W04-1013",
    pages = "74--81",
}
"""


class GqaRouge(base.GqaMetric):
    DESCRIPTION, CITATION, INPUTS = _DESCRIPTION, _CITATION, _KWARGS_DESCRIPTION
    CODEBASE_URLS = ["https://github.com/google-research/google-research/tree/master/rouge"]
    REFERENCE_URLS = ["https://aclanthology.org/W04-1013"]

    def _compute(
        self,
        predictions,
        references,
        rouge_types=None,
        use_stemmer=metrics.DEFAULT_OPTIONS["use_stemmer"],
        n_jobs=metrics.DEFAULT_OPTIONS["n_jobs"],
        **other,
    ):
        self._check_other_options(other)
        names = list(metrics.ROUGE_NAMES if rouge_types is None else rouge_types)
        if isinstance(rouge_types, str) or not names or any(n not in metrics.ROUGE_NAMES for n in names):
            raise ValueError(f"rouge_types must be a non-empty list from {list(metrics.ROUGE_NAMES)}")
        return metrics.score(names, predictions, references, use_stemmer=use_stemmer, n_jobs=n_jobs)
