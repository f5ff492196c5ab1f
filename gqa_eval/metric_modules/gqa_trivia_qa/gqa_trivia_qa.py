"""gqa-eval's TriviaQA scoring as an evaluate module:
`evaluate.load(gqa_eval.metric_modules.module_path("gqa_trivia_qa"))`.

The scores are `gqa_eval.metrics.score` on the same strings; no scoring code lives here.
"""

from gqa_eval import metrics
from gqa_eval.metric_modules import base

_DESCRIPTION = """\
TriviaQA exact match and token F1 as gqa-eval computes them: the official evaluation script's answer
normalisation (lower-case, punctuation and articles removed, whitespace collapsed), each the max over an
example's answer aliases, averaged over all questions, x100 (0-100 scale).
"""

_KWARGS_DESCRIPTION = """\
Args:
    predictions: One answer string per question (None counts as an empty answer).
    references: The answer's aliases, a list of strings per question (or one string per question).
Returns:
    {"exact_match": ..., "f1": ...}.
Examples:
    >>> trivia_qa = evaluate.load(gqa_eval.metric_modules.module_path("gqa_trivia_qa"))
    >>> trivia_qa.compute(predictions=["The Beatles"], references=[["Beatles", "The Fab Four"]])
    {'exact_match': 100.0, 'f1': 100.0}
"""

_CITATION = """\
@inproceedings{joshi-etal-2017-triviaqa,
    title = "{T}rivia{QA}: A Large Scale Distantly Supervised Challenge Dataset for Reading Comprehension",
    author = "Joshi, Mandar and Choi, Eunsol and Weld, Daniel and Zettlemoyer, Luke",
    booktitle = "Proceedings of the 55th Annual Meeting of the Association for Computational Linguistics",
    year = "2017",
    publisher = "Association for Computational Linguistics",
    url = "https://aclanthology.org/P17-1147",
    pages = "1601--1611",
}
"""


class GqaTriviaQa(base.GqaMetric):
    DESCRIPTION, CITATION, INPUTS = _DESCRIPTION, _CITATION, _KWARGS_DESCRIPTION
    CODEBASE_URLS = ["https://github.com/mandarjoshi90/triviaqa"]
    REFERENCE_URLS = ["https://aclanthology.org/P17-1147"]

    def _compute(self, predictions, references, **other):
        self._check_other_options(other)
        return metrics.score(["exact_match", "f1"], predictions, references)
