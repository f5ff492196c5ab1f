"""Deterministic generator of the bundled offline evaluation sets and of the synthetic training data.

Every task gets examples in the exact schema of the real hub dataset it stands in for (field names,
nesting, types), but all text is written here, from a small synthetic world: invented people, places,
organisations, objects and numbers, combined by templates. Nothing is copied from the real datasets.

The tasks are built so that a small model *can* learn them but has to attend to its input:

* Summarisation (cnn_dm, arxiv, pubmed, mediasum, multi_news): a document is a sequence of sentences.
  Some are *key facts* about one event or study (each opens a paragraph, or is a guest's answer in an
  interview); the rest are filler and distractors (other entities, "in a separate case ..."). The
  reference summary is a shorter template of exactly the key facts, in document order, so it is a
  function of the input that needs copying names and numbers from the right places.
* Translation (wmt_en_de): English sentences from a small grammar; the German side is a deterministic
  lexicon plus German word order (verb second after a fronted adverbial, verb-final "weil"/"dass"/"wenn"
  clauses, perfect tense with the participle last, separable prefixes), with case and gender agreement.
* TriviaQA: questions about a fixed, seeded fact world (capitals, founders, birthplaces, ...); the
  evidence is a wiki-like page with the answer among the subject's other facts and facts about other
  entities of the same kind.

One module per world: :mod:`.events` (the news events), :mod:`.news` (cnn_dm, multi_news),
:mod:`.dialogue` (mediasum), :mod:`.science` (arxiv, pubmed), :mod:`.translation` (wmt_en_de),
:mod:`.trivia` (trivia_qa); :mod:`.common` holds the split hashing, seeds and shared word lists, and
:mod:`.build` :func:`generate`, :func:`write_split` and the command line (:func:`main`).

Splits are disjoint by construction, not by luck. Each example has a *split key* that can be read off
the example itself (see :func:`split_key`): the reference summary for the summarisation tasks, the
English sentence for WMT, the subject entity (the first evidence page's title) for TriviaQA. The key is
hashed with SHA-256 (``task`` + key) into 100 buckets; buckets 0-9 are ``validation``, 10-19 ``test``,
20-99 ``train`` (:data:`SPLIT_BUCKETS`). ``generate`` samples candidates and keeps only those whose
bucket belongs to the requested split, so whatever the seed, a training example never shares its key
(its summary, its source sentence, or for TriviaQA any fact about its subject: subjects themselves are
partitioned, and evidence only mentions subjects of the same split) with a validation example.

Determinism: only ``random.Random`` seeded with integers derived by SHA-256, lists (never sets) for
iteration order, no time, no ``hash()``. ``generate(task, split, n, seed)`` returns the first ``n``
examples of a fixed stream, so a larger ``n`` extends a smaller one. Running ``python evals/build_data.py``
twice writes byte-identical files.
"""

from gqa_eval.metrics import normalize_answer
from gqa_eval.synthetic.build import generate, main, split_key, write_split
from gqa_eval.synthetic.common import (
    DEFAULT_N,
    DEFAULT_SEEDS,
    SPLIT_BUCKETS,
    SPLITS,
    TASKS,
    bucket,
    split_of,
)
from gqa_eval.synthetic.news import MULTI_NEWS_STEMS, multi_news_raw
from gqa_eval.synthetic.translation import MOTION, TRANSITIVE
from gqa_eval.synthetic.trivia import RELATION_KINDS, RELATIONS, WORLD_SEED, _answer_aliases, _world_split

__all__ = [
    "DEFAULT_N",
    "DEFAULT_SEEDS",
    "MOTION",
    "MULTI_NEWS_STEMS",
    "RELATIONS",
    "RELATION_KINDS",
    "SPLITS",
    "SPLIT_BUCKETS",
    "TASKS",
    "TRANSITIVE",
    "WORLD_SEED",
    # the TriviaQA world's internals, for gqa_eval.training.data's counterfactual questions
    "_answer_aliases",
    "_world_split",
    "bucket",
    "generate",
    "main",
    "multi_news_raw",
    "normalize_answer",
    "split_key",
    "split_of",
    "write_split",
]
