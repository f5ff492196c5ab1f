"""The translation world of wmt_en_de: English sentences from a small grammar and their German
rendering.

The German side is a deterministic lexicon plus German word order: verb second after a fronted
adverbial, verb-final "weil"/"dass"/"wenn" clauses, perfect tense with the participle last, separable
prefixes, with case and gender agreement of articles and adjectives.
"""

from __future__ import annotations

import random
from typing import Any

from gqa_eval.synthetic.common import FIRST_NAMES, _cap, _city, _words

# nouns: english, german, gender, kind
NOUNS = [
    ("teacher", "Lehrer", "m", "person"), ("doctor", "Ärztin", "f", "person"),
    ("fisherman", "Fischer", "m", "person"), ("painter", "Malerin", "f", "person"),
    ("baker", "Bäcker", "m", "person"), ("judge", "Richterin", "f", "person"),
    ("cook", "Koch", "m", "person"), ("singer", "Sängerin", "f", "person"),
    ("mayor", "Bürgermeister", "m", "person"), ("journalist", "Journalistin", "f", "person"),
    ("waiter", "Kellner", "m", "person"), ("pilot", "Pilotin", "f", "person"),
    ("merchant", "Händler", "m", "person"), ("pupil", "Schülerin", "f", "person"),
    ("driver", "Fahrer", "m", "person"), ("neighbour", "Nachbarin", "f", "person"),
    ("letter", "Brief", "m", "thing"), ("book", "Buch", "n", "thing"), ("car", "Auto", "n", "thing"),
    ("key", "Schlüssel", "m", "thing"), ("table", "Tisch", "m", "thing"),
    ("newspaper", "Zeitung", "f", "thing"), ("boat", "Boot", "n", "thing"),
    ("window", "Fenster", "n", "thing"), ("door", "Tür", "f", "thing"), ("lamp", "Lampe", "f", "thing"),
    ("map", "Karte", "f", "thing"), ("gift", "Geschenk", "n", "thing"), ("picture", "Bild", "n", "thing"),
    ("suitcase", "Koffer", "m", "thing"), ("bicycle", "Fahrrad", "n", "thing"),
    ("clock", "Uhr", "f", "thing"),
    ("museum", "Museum", "n", "place"), ("station", "Bahnhof", "m", "place"),
    ("market", "Markt", "m", "place"), ("church", "Kirche", "f", "place"),
    ("school", "Schule", "f", "place"), ("harbour", "Hafen", "m", "place"),
    ("garden", "Garten", "m", "place"), ("bridge", "Brücke", "f", "place"),
    ("house", "Haus", "n", "place"), ("library", "Bibliothek", "f", "place"),
]  # fmt: skip
# adjectives: english, german stem, applies to (person / thing / both)
ADJECTIVES = [
    ("old", "alt", "b"), ("new", "neu", "b"), ("small", "klein", "b"), ("big", "groß", "b"),
    ("quiet", "ruhig", "p"), ("famous", "berühmt", "b"), ("beautiful", "schön", "b"),
    ("young", "jung", "p"), ("friendly", "freundlich", "p"), ("clever", "klug", "p"),
    ("happy", "glücklich", "p"), ("curious", "neugierig", "p"), ("hard-working", "fleißig", "p"),
    ("red", "rot", "t"), ("heavy", "schwer", "t"), ("empty", "leer", "t"), ("blue", "blau", "t"),
    ("white", "weiß", "t"), ("cheap", "billig", "t"), ("strange", "seltsam", "t"), ("green", "grün", "t"),
]  # fmt: skip
# transitive verbs: (base, 3sg, past), german 3sg present, participle, separable prefix, object kinds
TRANSITIVE = [
    (("visit", "visits", "visited"), "besucht", "besucht", "", ("person", "place")),
    (("see", "sees", "saw"), "sieht", "gesehen", "", ("person", "thing", "place")),
    (("find", "finds", "found"), "findet", "gefunden", "", ("thing",)),
    (("buy", "buys", "bought"), "kauft", "gekauft", "", ("thing",)),
    (("sell", "sells", "sold"), "verkauft", "verkauft", "", ("thing",)),
    (("paint", "paints", "painted"), "malt", "gemalt", "", ("thing", "place", "person")),
    (("repair", "repairs", "repaired"), "repariert", "repariert", "", ("thing",)),
    (("carry", "carries", "carried"), "trägt", "getragen", "", ("thing",)),
    (("lose", "loses", "lost"), "verliert", "verloren", "", ("thing",)),
    (("describe", "describes", "described"), "beschreibt", "beschrieben", "", ("person", "thing", "place")),
    (("meet", "meets", "met"), "trifft", "getroffen", "", ("person",)),
    (("greet", "greets", "greeted"), "begrüßt", "begrüßt", "", ("person",)),
    (("clean", "cleans", "cleaned"), "putzt", "geputzt", "", ("thing",)),
    (("photograph", "photographs", "photographed"), "fotografiert", "fotografiert", "",
     ("person", "thing", "place")),
    (("call", "calls", "called"), "ruft", "angerufen", "an", ("person",)),
    (("invite", "invites", "invited"), "lädt", "eingeladen", "ein", ("person",)),
    (("collect", "collects", "collected"), "holt", "abgeholt", "ab", ("person", "thing")),
]  # fmt: skip
# motion verbs with a destination city ("to X" -> "nach X"); perfect with "sein"
MOTION = [
    (("travel", "travels", "travelled"), "reist", "gereist", ""),
    (("drive", "drives", "drove"), "fährt", "gefahren", ""),
    (("fly", "flies", "flew"), "fliegt", "geflogen", ""),
    (("walk", "walks", "walked"), "läuft", "gelaufen", ""),
    (("return", "returns", "returned"), "kehrt", "zurückgekehrt", "zurück"),
]
# time adverbials: english, german, tenses allowed
TIMES = [
    ("on Monday", "am Montag", "both"), ("on Tuesday", "am Dienstag", "both"),
    ("on Wednesday", "am Mittwoch", "both"), ("on Thursday", "am Donnerstag", "both"),
    ("on Friday", "am Freitag", "both"), ("on Saturday", "am Samstag", "both"),
    ("on Sunday", "am Sonntag", "both"), ("in the evening", "am Abend", "both"),
    ("in the morning", "am Morgen", "both"), ("after lunch", "nach dem Mittagessen", "both"),
    ("in the summer", "im Sommer", "both"), ("yesterday", "gestern", "past"),
    ("last week", "letzte Woche", "past"), ("today", "heute", "present"),
    ("every morning", "jeden Morgen", "present"),
]  # fmt: skip
MANNERS = [
    ("quickly", "schnell"),
    ("carefully", "vorsichtig"),
    ("quietly", "leise"),
    ("again", "wieder"),
    ("proudly", "stolz"),
]
# locative prepositions taking the dative
LOC_PREPS = [("next to", "neben"), ("behind", "hinter"), ("in front of", "vor")]
DE_ART = {
    ("def", "nom"): {"m": "der", "f": "die", "n": "das"},
    ("def", "acc"): {"m": "den", "f": "die", "n": "das"},
    ("def", "dat"): {"m": "dem", "f": "der", "n": "dem"},
    ("indef", "nom"): {"m": "ein", "f": "eine", "n": "ein"},
    ("indef", "acc"): {"m": "einen", "f": "eine", "n": "ein"},
    ("indef", "dat"): {"m": "einem", "f": "einer", "n": "einem"},
}
SAY_VERBS = [(("said", "says"), ("sagte", "sagt")), (("believed", "believes"), ("glaubte", "glaubt"))]


def _adj_ending(det: str, case: str, gender: str) -> str:
    if case == "dat":
        return "en"
    if det == "def":
        return "en" if (case == "acc" and gender == "m") else "e"
    if case == "nom":
        return {"m": "er", "f": "e", "n": "es"}[gender]
    return {"m": "en", "f": "e", "n": "es"}[gender]


class _NP:
    """A noun phrase: a bare name, or determiner + optional adjective + noun."""

    def __init__(self, rng: random.Random, kind: str, allow_name: bool = True):
        self.name = None
        if kind == "person" and allow_name and rng.random() < 0.35:
            self.name = rng.choice(FIRST_NAMES)
            return
        self.noun = rng.choice([n for n in NOUNS if n[3] == kind])
        self.det = "def" if rng.random() < 0.7 else "indef"
        wanted = "p" if kind == "person" else "t"
        self.adj = (
            rng.choice([a for a in ADJECTIVES if a[2] in ("b", wanted)]) if rng.random() < 0.6 else None
        )

    def en(self) -> str:
        if self.name:
            return self.name
        words = ([self.adj[0]] if self.adj else []) + [self.noun[0]]
        if self.det == "def":
            det = "the"
        else:
            det = "an" if words[0][0] in "aeiou" else "a"
        return " ".join([det] + words)

    def de(self, case: str) -> str:
        if self.name:
            return self.name
        gender = self.noun[2]
        words = [DE_ART[(self.det, case)][gender]]
        if self.adj:
            words.append(self.adj[1] + _adj_ending(self.det, case, gender))
        words.append(self.noun[1])
        return " ".join(words)


class _Clause:
    """Subject + verb (+ object) (+ manner) (+ place) (+ time), rendered in English and in German."""

    def __init__(self, rng: random.Random, tense: str, with_time: bool = True):
        self.tense = tense
        self.subj = _NP(rng, "person")
        self.motion = rng.random() < 0.25
        if self.motion:
            forms, self.v3, self.pp, self.sep = rng.choice(MOTION)
            self.obj = None
            self.aux = ("ist", "sind")
            self.dest = _city(rng)
        else:
            forms, self.v3, self.pp, self.sep, kinds = rng.choice(TRANSITIVE)
            self.obj = _NP(rng, rng.choice(kinds))
            self.aux = ("hat", "haben")
            self.dest = None
        self.forms = forms
        self.manner = rng.choice(MANNERS) if rng.random() < 0.3 else None
        self.loc = None
        if not self.motion and rng.random() < 0.45:
            if rng.random() < 0.5:
                self.loc = ("in " + (city := _city(rng)), "in " + city)
            else:
                prep = rng.choice(LOC_PREPS)
                place = _NP(rng, "place", allow_name=False)
                self.loc = (f"{prep[0]} {place.en()}", f"{prep[1]} {place.de('dat')}")
        allowed = [t for t in TIMES if t[2] in ("both", tense)]
        self.time = rng.choice(allowed) if with_time and rng.random() < 0.7 else None

    def en_verb(self) -> str:
        return self.forms[1] if self.tense == "present" else self.forms[2]

    def en(self, front_time: bool = False) -> str:
        parts = [self.subj.en(), self.en_verb()]
        if self.obj:
            parts.append(self.obj.en())
        if self.dest:
            parts.append("to " + self.dest)
        if self.manner:
            parts.append(self.manner[0])
        if self.loc:
            parts.append(self.loc[0])
        if self.time and not front_time:
            parts.append(self.time[0])
        return " ".join(parts)

    def _midfield(self, skip_time: bool) -> list[str]:
        parts = []
        if self.time and not skip_time:
            parts.append(self.time[1])
        if self.manner:
            parts.append(self.manner[1])
        if self.obj:
            parts.append(self.obj.de("acc"))
        if self.loc:
            parts.append(self.loc[1])
        if self.dest:
            parts.append("nach " + self.dest)
        return parts

    def de(self, order: str, skip_time: bool = False) -> str:
        """``order``: "main" (subject first, verb second), "inv" (verb first: something was fronted),
        "sub" (subordinate clause, finite verb last)."""
        subj = self.subj.de("nom")
        mid = self._midfield(skip_time)
        if self.tense == "present":
            if order == "sub":
                return " ".join([subj, *mid, self.sep + self.v3])
            tail = [self.sep] if self.sep else []
            head = [subj, self.v3] if order == "main" else [self.v3, subj]
            return " ".join(head + mid + tail)
        aux = self.aux[0]
        if order == "sub":
            return " ".join([subj, *mid, self.pp, aux])
        head = [subj, aux] if order == "main" else [aux, subj]
        return " ".join(head + mid + [self.pp])


def _make_wmt(rng: random.Random) -> tuple[dict[str, Any], str]:
    for _ in range(1000):
        tense = rng.choice(["present", "past"])
        form = rng.choices(["simple", "fronted", "because", "that", "when", "and"], [2, 2, 3, 2, 2, 2])[0]
        if form == "when":
            tense = "present"
        c1 = _Clause(rng, tense)
        if form == "simple":
            en, de = c1.en(), c1.de("main")
        elif form == "fronted":
            if not c1.time:
                continue
            en = f"{_cap(c1.time[0])}, {c1.en(front_time=True)}"
            de = f"{_cap(c1.time[1])} {c1.de('inv', skip_time=True)}"
        elif form == "because":
            c2 = _Clause(rng, rng.choice(["present", "past"]))
            en, de = f"{c1.en()}, because {c2.en()}", f"{c1.de('main')}, weil {c2.de('sub')}"
        elif form == "that":
            sayer = _NP(rng, "person")
            en_say, de_say = rng.choice(SAY_VERBS)
            k = 0 if tense == "past" else 1
            en = f"{sayer.en()} {en_say[k]} that {c1.en()}"
            de = f"{sayer.de('nom')} {de_say[k]}, dass {c1.de('sub')}"
        elif form == "when":
            c2 = _Clause(rng, "present", with_time=False)
            en = f"When {c1.en()}, {c2.en()}"
            de = f"Wenn {c1.de('sub')}, {c2.de('inv')}"
        else:
            c2 = _Clause(rng, tense, with_time=False)
            en, de = f"{c1.en()} and {c2.en()}", f"{c1.de('main')} und {c2.de('main')}"
        en, de = _cap(en) + ".", _cap(de) + "."
        if 10 <= _words(en) <= 30:
            return {"translation": {"de": de, "en": en}}, en
    raise RuntimeError("no sentence of the right length")  # pragma: no cover
