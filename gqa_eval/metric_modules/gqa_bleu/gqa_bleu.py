"""gqa-eval's BLEU as an evaluate module: `evaluate.load(gqa_eval.metric_modules.module_path("gqa_bleu"))`.

The score is `gqa_eval.metrics.score` on the same strings; no scoring code lives here.
"""

from gqa_eval import metrics
from gqa_eval.metric_modules import base

_DESCRIPTION = """\
Corpus BLEU as gqa-eval computes it: sacrebleu's BLEU (0-100 scale) with the WMT task's settings by
default (tokenize="intl", smooth_method="exp", lowercase=False, as T5 reported WMT). Several references
per example become sacrebleu reference streams; examples may have different numbers of references.
"""

_KWARGS_DESCRIPTION = """\
Args:
    predictions: One string per example (None counts as an empty prediction).
    references: One string, or a list of strings, per example (one or the other for a whole batch).
    tokenize: sacrebleu tokenizer (default "intl"): "13a", "intl", "zh", "ja-mecab", "char", "none", ...
    smooth_method: sacrebleu smoothing (default "exp"): "exp", "floor", "add-k", "none".
    lowercase: Lower-case before scoring (default False).
Returns:
    {"bleu": corpus BLEU}.
Examples:
    >>> bleu = evaluate.load(gqa_eval.metric_modules.module_path("gqa_bleu"))
    >>> bleu.compute(predictions=["the cat sat on the mat"], references=[["the cat sat on the mat"]])
    {'bleu': 100.00000000000004}
"""

_CITATION = """\
@inproceedings{post-2018-call,
    title = "A Call for Clarity in Reporting {BLEU} Scores",
    author = "Post, Matt",
    booktitle = "Proceedings of the Third Conference on Machine Translation: Research Papers",
    year = "2018",
    publisher = "Association for Computational Linguistics",
    url = "https://www.aclweb.org/anthology/W18-6319",
    pages = "186--191",
}
"""


class GqaBleu(base.GqaMetric):
    DESCRIPTION, CITATION, INPUTS = _DESCRIPTION, _CITATION, _KWARGS_DESCRIPTION
    CODEBASE_URLS = ["https://github.com/mjpost/sacreBLEU"]
    REFERENCE_URLS = ["https://www.aclweb.org/anthology/W18-6319"]

    def _compute(
        self,
        predictions,
        references,
        tokenize=metrics.DEFAULT_OPTIONS["bleu_tokenize"],
        smooth_method=metrics.DEFAULT_OPTIONS["bleu_smooth"],
        lowercase=metrics.DEFAULT_OPTIONS["bleu_lowercase"],
        **other,
    ):
        self._check_other_options(other)
        return metrics.score(
            ["bleu"],
            predictions,
            references,
            bleu_tokenize=tokenize,
            bleu_smooth=smooth_method,
            bleu_lowercase=lowercase,
        )
