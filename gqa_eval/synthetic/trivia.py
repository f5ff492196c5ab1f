"""The TriviaQA fact world: a fixed, seeded set of countries, people and organisations with their
facts (capitals, rivers, founders, birthplaces, ...), questions about them, and wiki-like evidence
pages.

The world is the same for every split and seed (:data:`WORLD_SEED`); its subjects are partitioned by
split (:func:`_world_split`), and a page only mentions subjects of its own split, so no fact about a
validation subject ever reaches training. Answers are normalised as the official TriviaQA evaluation
does (:func:`gqa_eval.metrics.normalize_answer`).
"""

from __future__ import annotations

import random
from functools import cache, lru_cache
from typing import Any

from gqa_eval.metrics import normalize_answer
from gqa_eval.synthetic.common import (
    CITY_HEADS,
    CITY_TAILS,
    FIRST_NAMES,
    ORG_HEADS,
    ORG_KINDS,
    REGIONS,
    RIVERS,
    SPLITS,
    SURNAMES,
    _cap,
    _sample,
    _sha,
    split_of,
)

#: Seed of the fixed TriviaQA fact world (shared by all splits).
WORLD_SEED = 20230513

COUNTRY_HEADS = [
    "Vel", "Tar", "Cas", "Dor", "Esk", "Fal", "Gor", "Hal", "Ith", "Jun", "Kor", "Lum", "Mer", "Nal",
    "Or", "Pan", "Quel", "Ros", "Sar", "Tel", "Ul", "Var", "Wes", "Zan",
]  # fmt: skip
COUNTRY_TAILS = ["oria", "avia", "esta", "mark", "onia", "ovia", "aria", "edia", "ura", "istan"]
CURRENCIES = [
    "dorsel", "marren", "tallet", "quint", "sovel", "brack", "lira", "nessel", "pennet", "gorran",
    "kestel", "ambrin", "holt", "varsk", "thaler", "crownet",
]  # fmt: skip
ANIMALS = [
    "snow lynx", "marsh heron", "red stag", "river otter", "grey falcon", "silver fox", "mountain goat",
    "golden eagle", "sea turtle", "brown bear", "white crane", "striped badger", "blue kingfisher",
    "black swan", "spotted owl", "wild boar",
]  # fmt: skip
INSTRUMENTS = ["violin", "cello", "harp", "flute", "clarinet", "oboe", "piano", "horn", "lute", "trumpet"]
BOOK_ADJS = [
    "Silent", "Glass", "Hollow", "Burning", "Distant", "Copper", "Sleeping", "Broken", "Winter", "Hidden",
    "Crimson", "Last", "Quiet", "Painted", "Salt",
]  # fmt: skip
BOOK_NOUNS = [
    "Harbour", "Orchard", "Lantern", "Bridge", "Garden", "Tower", "River", "Kingdom", "Road", "Mirror",
    "Island", "Meadow", "Clock", "Forest", "Letter",
]  # fmt: skip

# relation -> (question templates, evidence templates); evidence must contain the answer's value.
RELATIONS: dict[str, tuple[list[str], list[str]]] = {
    "capital": (
        [
            "Which city is the capital of {s}?",
            "What is the capital of {s}?",
            "{s} is governed from which city?",
        ],
        ["The capital of {s} is {o}.", "{o} is the capital and largest city of {s}."],
    ),
    "river": (
        ["What is the longest river in {s}?", "Which river is the longest in {s}?"],
        ["The longest river in {s} is the {o}.", "The {o} is the longest river in {s}."],
    ),
    "currency": (
        ["What is the currency of {s}?", "In {s}, prices are paid in which currency?"],
        ["The currency of {s} is the {o}.", "Prices in {s} are paid in the {o}."],
    ),
    "animal": (
        ["What is the national animal of {s}?", "Which animal is the national symbol of {s}?"],
        [
            "The national animal of {s} is the {o}.",
            "The {o} appears on the coat of arms of {s} as its national animal.",
        ],
    ),
    "independence": (
        ["In which year did {s} become independent?", "When did {s} gain independence?"],
        ["{s} became independent in {o}.", "{s} gained its independence in {o}."],
    ),
    "president": (
        ["Who was the first president of {s}?", "Who served as the first president of {s}?"],
        ["The first president of {s} was {o}.", "{o} served as the first president of {s}."],
    ),
    "birthplace": (
        ["In which city was {s} born?", "What is the birthplace of {s}?"],
        ["{s} was born in {o}.", "Born in {o}, {s} later moved abroad."],
    ),
    "birth_year": (
        ["In which year was {s} born?", "When was {s} born?"],
        ["{s} was born in the year {o}.", "Records show that {s} was born in {o}."],
    ),
    "book": (
        ["Which book is {s} best known for?", "What is the best-known book by {s}?"],
        ["{s} is best known as the author of {o}.", "The novel {o} made {s} famous."],
    ),
    "instrument": (
        ["Which instrument did {s} play?", "{s} was a famous player of which instrument?"],
        ["{s} played the {o} in several orchestras.", "As a young musician, {s} took up the {o}."],
    ),
    "founder": (
        ["Who founded the {s}?", "Who was the founder of the {s}?"],
        ["The {s} was founded by {o}.", "{o} founded the {s}."],
    ),
    "headquarters": (
        ["In which city is the {s} based?", "Where does the {s} have its headquarters?"],
        ["The {s} has its headquarters in {o}.", "The {s} is based in {o}."],
    ),
    "founded": (
        ["In which year was the {s} founded?", "When was the {s} established?"],
        ["The {s} was established in {o}.", "Since its founding in {o}, the {s} has grown steadily."],
    ),
}
SUBJECT_INTROS = {
    "country": [
        "{s} is a country in the {region} region.",
        "{s} is a small state on the edge of the {region} region.",
    ],
    "person": ["{s} was a writer and musician from {country}.", "{s} was an artist born in {country}."],
    "org": [
        "The {s} is an organisation based in {country}.",
        "The {s} is one of the oldest bodies in {country}.",
    ],
}
PAGE_FILLERS = {
    "country": [
        "Its economy is based on farming, fishing and trade.",
        "The country has a mild climate with wet winters.",
        "Its population is about {num} thousand people.",
        "Tourism has grown steadily in recent decades.",
    ],
    "person": [
        "Little is known about their early education.",
        "Their letters were published after their death.",
        "They travelled widely and spoke several languages.",
        "A street in {city} is named after them.",
    ],
    "org": [
        "It employs about {num} people.",
        "Its annual report is published each spring.",
        "It has opened several branch offices abroad.",
        "Its archive is open to researchers by appointment.",
    ],
}


class _Entity:
    def __init__(self, name: str, kind: str):
        self.name = name
        self.kind = kind
        self.facts: dict[str, Any] = {}  # relation -> answer (see _answer)
        self.attrs: dict[str, Any] = {}


def _answer_aliases(kind: str, value: Any) -> tuple[list[str], str]:
    if kind == "city":
        return [value, f"City of {value}"], "WikipediaEntity"
    if kind == "person":
        first, last = value.split()
        return [value, last, f"{first[0]}. {last}"], "WikipediaEntity"
    if kind == "river":
        return [f"{value} River", value, f"River {value}"], "WikipediaEntity"
    if kind == "currency":
        return [value, value + "s"], "WikipediaEntity"
    if kind == "book":
        return [value, value.removeprefix("The ")], "WikipediaEntity"
    if kind == "year":
        return [str(value)], "FreeForm"
    return [value], "WikipediaEntity"  # animal, instrument


RELATION_KINDS = {
    "capital": "city", "river": "river", "currency": "currency", "animal": "animal", "independence": "year",
    "president": "person", "birthplace": "city", "birth_year": "year", "book": "book",
    "instrument": "instrument", "founder": "person", "headquarters": "city", "founded": "year",
}  # fmt: skip


@lru_cache(maxsize=1)
def _world() -> list[_Entity]:
    """The fixed fact world (same for every split and seed): countries, people, organisations."""
    rng = random.Random(WORLD_SEED)
    cities = [h + t for h in CITY_HEADS for t in CITY_TAILS]
    rng.shuffle(cities)
    countries = [h + t for h in COUNTRY_HEADS for t in COUNTRY_TAILS]
    rng.shuffle(countries)
    countries = countries[:150]
    people = [f"{f} {s}" for f in FIRST_NAMES for s in SURNAMES]
    rng.shuffle(people)
    orgs = [f"{h} {k}" for h in ORG_HEADS for k in ORG_KINDS]
    rng.shuffle(orgs)
    books = [f"The {a} {n}" for a in BOOK_ADJS for n in BOOK_NOUNS]
    rng.shuffle(books)
    entities: list[_Entity] = []
    # an entity's page may name a country; keep that country in the entity's own split
    by_split = {sp: [c for c in countries if split_of("trivia_qa", c) == sp] for sp in SPLITS}

    def home(name: str) -> str:
        return rng.choice(by_split[split_of("trivia_qa", name)])

    presidents = people[:150]
    for i, name in enumerate(countries):
        e = _Entity(name, "country")
        e.facts = {
            "capital": cities[i],
            "river": rng.choice(RIVERS),
            "currency": rng.choice(CURRENCIES),
            "animal": rng.choice(ANIMALS),
            "independence": rng.randint(1650, 1990),
            "president": presidents[i],
        }
        e.attrs = {"region": rng.choice(REGIONS), "num": rng.randint(80, 9000)}
        entities.append(e)
    for i, name in enumerate(people[150:350]):
        e = _Entity(name, "person")
        e.facts = {
            "birthplace": rng.choice(cities),
            "birth_year": rng.randint(1700, 1980),
            "book": books[i],
            "instrument": rng.choice(INSTRUMENTS),
        }
        e.attrs = {"country": home(name), "city": rng.choice(cities)}
        entities.append(e)
    founders = people[350:]
    for i, name in enumerate(orgs):
        e = _Entity(name, "org")
        e.facts = {
            "founder": founders[i],
            "headquarters": rng.choice(cities),
            "founded": rng.randint(1750, 2005),
        }
        e.attrs = {"country": home(name), "num": rng.randint(20, 5000)}
        entities.append(e)
    return entities


@cache
def _world_split(split: str) -> list[_Entity]:
    return [e for e in _world() if split_of("trivia_qa", e.name) == split]


def _fact_sentence(rng: random.Random, entity: _Entity, relation: str) -> str:
    value = entity.facts[relation]
    rendered = _answer_aliases(RELATION_KINDS[relation], value)[0][0]
    template = rng.choice(RELATIONS[relation][1])
    return _cap(template.format(s=entity.name, o=rendered))


def _page(rng: random.Random, entity: _Entity, others: list[_Entity]) -> str:
    """A wiki-like page about ``entity``: intro, its facts in random order, filler, and a few facts
    about other entities of the same kind (the distractors)."""
    fill = {"s": entity.name, **entity.attrs}
    sentences = [_cap(rng.choice(SUBJECT_INTROS[entity.kind]).format(**fill))]
    body = [_fact_sentence(rng, entity, r) for r in entity.facts]
    body += [f.format(**fill) for f in _sample(rng, PAGE_FILLERS[entity.kind], 2)]
    rng.shuffle(body)
    sentences += body
    for other in others:
        relation = rng.choice(list(other.facts))
        link = rng.choice(["It is often compared with {o}.", "It is sometimes confused with {o}."])
        sentences.append(link.format(o=("the " if other.kind == "org" else "") + other.name))
        sentences.append(_fact_sentence(rng, other, relation))
    return " ".join(sentences)


def _make_trivia(rng: random.Random, split: str) -> tuple[dict[str, Any], str]:
    pool = _world_split(split)
    entity = rng.choice(pool)
    relation = rng.choice(list(entity.facts))
    same_kind = [e for e in pool if e.kind == entity.kind and e is not entity]
    value = entity.facts[relation]
    aliases, answer_type = _answer_aliases(RELATION_KINDS[relation], value)
    question = _cap(rng.choice(RELATIONS[relation][0]).format(s=entity.name))
    pages = [(entity, _page(rng, entity, _sample(rng, same_kind, rng.randint(1, 3))))]
    if rng.random() < 0.5:
        second = rng.choice(same_kind)
        pages.append((second, _page(rng, second, _sample(rng, [e for e in same_kind if e is not second], 1))))
    normalized = []
    for alias in aliases:
        if normalize_answer(alias) not in normalized:
            normalized.append(normalize_answer(alias))
    entity_name = aliases[0] if answer_type == "WikipediaEntity" else ""
    body = question + "\x1f" + "\x1f".join(text for _, text in pages)
    example = {
        "question": question,
        "question_id": f"tc_{int(_sha(body)[:12], 16) % 10**9}",
        "question_source": "https://quiz.example.org/",
        "entity_pages": {
            "doc_source": ["TagMe" for _ in pages],
            "filename": [e.name.replace(" ", "_") + ".txt" for e, _ in pages],
            "title": [e.name for e, _ in pages],
            "wiki_context": [text for _, text in pages],
        },
        "search_results": {
            "description": [],
            "filename": [],
            "rank": [],
            "title": [],
            "url": [],
            "search_context": [],
        },
        "answer": {
            "aliases": aliases,
            "normalized_aliases": normalized,
            "matched_wiki_entity_name": entity_name,
            "normalized_matched_wiki_entity_name": normalize_answer(entity_name),
            "normalized_value": normalize_answer(aliases[0]),
            "type": answer_type,
            "value": aliases[0],
        },
    }
    return example, f"{entity.name}\x1f{relation}"
