"""The news tasks: cnn_dm (one article about an event, its highlights) and multi_news (several
articles about the same event, one summary), with the filler sentences of a local news page.

The key facts come from the event worlds of :mod:`.events`; everything else is filler about
bystanders (other people, towns and organisations, "in a separate case ...").
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from typing import Any

from gqa_eval.synthetic.common import (
    MONTHS,
    REGIONS,
    WEEKDAYS,
    _cities,
    _city,
    _grow,
    _org,
    _person,
    _pick_unused,
    _with_min_words,
    _words,
)
from gqa_eval.synthetic.events import _Event

OUTLETS = ["Courier", "Herald Wire", "Valley Post", "Daily Lantern"]
#: File name stem of each split in the Multi-News raw format.
MULTI_NEWS_STEMS = {"validation": "val", "test": "test", "train": "train"}

NEWS_FILLERS = [
    "Residents said the neighbourhood is usually quiet.",
    "The weather in {cityx} remained mild for most of the week.",
    "Local radio stations reported heavy traffic on the roads around {cityx}.",
    "A spokesperson for the {orgx} declined to comment further.",
    "{personx}, who lives nearby, said the street had been quiet all week.",
    "The town council is expected to discuss the matter at its next meeting.",
    "Last year, {personx} opened a small bakery in {cityx}.",
    "Further details are expected to be released later this week.",
    "The {orgx} has offices in {cityx} and {cityy}.",
    "Many shops in the centre of {cityx} stayed open late on {dayx}.",
    "Photographs shared online showed long queues outside the town hall.",
    "The regional newspaper in {cityx} first reported the story on {dayx}.",
    "Elsewhere in the region, a music festival in {cityx} drew {numx} visitors.",
    "In a separate case, police in {cityx} are looking for a missing van.",
    "Earlier this year, {personx} was named head of the {orgx}.",
    "The train line from {cityx} to {cityy} reopened on {dayx} after repairs.",
    "Visitors to {cityx} have been asked to check travel updates before setting out.",
    "{personx} of the {orgx} said it was too early to draw conclusions.",
    "Volunteers handed out hot drinks outside the station in {cityx}.",
    "Market traders in {cityx} said business had been slow since the spring.",
    "The {regionx} region has a population of about {numx} thousand people.",
    "A bridge in {cityx} will be closed for maintenance on {dayx}.",
    "Schools in {cityx} held a charity run on {dayx}, raising {numx} crowns.",
    "The ferry between {cityx} and {cityy} was delayed by fog.",
    "A new cycle path between {cityx} and {cityy} is due to open in the spring.",
    "The library in {cityx} has extended its opening hours until the end of the month.",
    "{personx}, a shopkeeper in {cityx}, said customers had been asking about little else.",
    "The {orgx} said it would publish its annual figures on {dayx}.",
    "Heavy rain is forecast for the {regionx} region later in the week.",
    "A local choir in {cityx} will perform at the town hall on {dayx}.",
    "Parking in the centre of {cityx} will be free on {dayx}.",
    "In a separate case, a fishing boat ran aground near {cityx} but nobody was hurt.",
    "Last month, the {orgx} moved its offices from {cityx} to {cityy}.",
    "The bus company serving {cityx} has added {numx} extra seats on its evening routes.",
    "Elsewhere, the harbour in {cityy} welcomed its first cruise ship of the season.",
    "A petition calling for a new playground in {cityx} has gathered {numx} signatures.",
    "The old cinema in {cityx} is being turned into a community centre.",
    "{personx} told the local paper that the town had seen worse winters.",
    "Earlier in the week, a water pipe burst on the main street of {cityx}.",
    "Tickets for the autumn fair in {cityy} went on sale on {dayx}.",
    "A spokesperson for the {regionx} regional council said the budget would be reviewed.",
    "The post office in {cityx} will close early on {dayx}.",
]


def _filler_slots(rng: random.Random) -> dict[str, Any]:
    personx = _person(rng)
    cityx, cityy = _cities(rng, 2)
    return {
        "personx": personx,
        "firstx": personx.split()[0],
        "cityx": cityx,
        "cityy": cityy,
        "orgx": _org(rng),
        "dayx": rng.choice(WEEKDAYS),
        "numx": rng.randint(20, 900),
        "regionx": rng.choice(REGIONS),
    }


def _filler(rng: random.Random, templates: Sequence[str], used: list[str], **extra: Any) -> str:
    """A filler sentence from ``templates`` not used yet in this document (when possible), about
    bystanders drawn afresh (:func:`_filler_slots`) and the ``extra`` slots."""
    return _pick_unused(rng, templates, used).format(**_filler_slots(rng), **extra)


# --------------------------------------------------------------------------------------------------
# cnn_dm
# --------------------------------------------------------------------------------------------------


def _make_cnn_dm(rng: random.Random) -> tuple[dict[str, Any], str]:
    def attempt() -> tuple[_Event, str]:
        event = _Event(rng, (2, 4))
        return event, " ".join(event.short(i) for i in event.chosen)

    event = _with_min_words(rng, attempt, 20, 80)
    paragraphs = [[event.long(rng, i)] for i in event.chosen]
    used: list[str] = []
    _grow(rng, paragraphs, rng.randint(170, 330), lambda: _filler(rng, NEWS_FILLERS, used))
    city = event.slots.get("city", _city(rng)).upper()
    if rng.random() < 0.5:
        prefix = f"{city} ({rng.choice(OUTLETS)}) -- "
    else:
        prefix = f"By . {_person(rng)} . PUBLISHED: . {rng.randint(1, 28)} {rng.choice(MONTHS)} . "
    article = prefix + " ".join(s for p in paragraphs for s in p)
    highlights = "\n".join(event.short(i) + " ." for i in event.chosen)
    example = {"article": article, "highlights": highlights, "id": hashlib.sha1(article.encode()).hexdigest()}
    return example, highlights


# --------------------------------------------------------------------------------------------------
# multi_news
# --------------------------------------------------------------------------------------------------


def _make_multi_news(rng: random.Random) -> tuple[dict[str, Any], str]:
    def attempt() -> tuple[_Event, str]:
        event = _Event(rng, (3, 5))
        return event, " ".join(event.short(i) + "." for i in event.chosen)

    event = _with_min_words(rng, attempt, 20, 80)
    n_docs = rng.randint(2, 4)
    # every chosen fact is reported by at least one document; the lead by the first
    coverage: list[list[int]] = [[] for _ in range(n_docs)]
    for j, i in enumerate(event.chosen):
        docs = {0} if j == 0 else {rng.randrange(n_docs)}
        docs |= {d for d in range(n_docs) if rng.random() < 0.35}
        for d in sorted(docs):
            coverage[d].append(i)
    for d in range(n_docs):  # a document with no key fact still talks about the event
        if not coverage[d]:
            coverage[d].append(0)
    docs_paragraphs = [[[event.long(rng, i)] for i in coverage[d]] for d in range(n_docs)]
    key_words = sum(_words(s) for doc in docs_paragraphs for p in doc for s in p)
    filler_budget = max(0, rng.randint(290, 570) - key_words) // n_docs
    documents = []
    for paragraphs in docs_paragraphs:
        used: list[str] = []
        if len(paragraphs) == 1:  # news pages have several paragraphs
            paragraphs.append([_filler(rng, NEWS_FILLERS, used)])
        target = sum(_words(s) for p in paragraphs for s in p) + filler_budget
        _grow(rng, paragraphs, target, lambda used=used: _filler(rng, NEWS_FILLERS, used))
        documents.append("\n\n".join(" ".join(p) for p in paragraphs))
    summary = " ".join(event.short(i) + "." for i in event.chosen)
    return {"document": " ||||| ".join(documents), "summary": summary}, summary


def multi_news_raw(example: dict[str, str]) -> tuple[str, str]:
    """One example as its lines in the raw ``.src.cleaned`` / ``.tgt`` files of alexfabbri/multi_news:
    newlines written as ``NEWLINE_CHAR`` tokens, the summary led by an en dash."""
    src = example["document"].replace("\n\n", " NEWLINE_CHAR NEWLINE_CHAR ").replace("\n", " NEWLINE_CHAR ")
    return src, "– " + example["summary"]
