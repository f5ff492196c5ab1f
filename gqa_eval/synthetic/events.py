"""The news event worlds: six kinds of event (a crime, a new factory, a cup final, a storm, an
election, an archaeological find), each a slot sampler, its key facts, a title and a topic.

A sampled :class:`_Event` fills the slots once and picks which facts a document reports; the long
phrasings go into the document, the short ones make the reference. cnn_dm, multi_news (:mod:`.news`)
and mediasum (:mod:`.dialogue`) are all written about these events.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from gqa_eval.synthetic.common import (
    MONTHS,
    ORG_HEADS,
    REGIONS,
    RIVERS,
    WEEKDAYS,
    Fact,
    _cap,
    _cities,
    _city,
    _org,
    _people,
    _person,
    _sample,
)

STOLEN_GOODS = [
    "bicycles", "copper kettles", "laptops", "paintings", "solar lamps", "outboard motors",
    "sewing machines", "brass lanterns", "wrist watches", "garden tools", "violins", "cameras",
]  # fmt: skip
PRODUCTS = [
    "electric bicycles", "solar panels", "glass bottles", "turbine blades", "railway carriages",
    "copper cables", "ceramic tiles", "water pumps", "fishing nets", "paper bags",
]  # fmt: skip
MASCOTS = ["Rovers", "United", "Wanderers", "Athletic", "Harriers", "Falcons", "Rangers", "Albion"]
FACILITIES = ["schools", "libraries", "bus lines", "parks", "health centres", "bridges", "swimming pools"]
JOBS = ["teacher", "nurse", "fisherman", "carpenter", "lawyer", "baker", "engineer", "farmer", "pilot"]
FINDS = ["bronze helmet", "silver coin", "wooden boat", "stone tablet", "gold ring", "clay jar"]
MATERIALS = ["bronze", "silver", "oak", "granite", "gold", "clay", "iron"]


def _ordinal(n: int) -> str:
    if 10 <= n % 100 <= 20:
        suffix = "th"
    else:
        suffix = {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


# The recurring cast of an event: k distinct people, towns or weekdays in one draw.
_CAST: dict[str, Callable[[random.Random, int], list[str]]] = {
    "people": _people,
    "cities": _cities,
    "days": lambda rng, k: _sample(rng, WEEKDAYS, k),
}


def _cast(rng: random.Random, **roles: tuple[str, ...]) -> dict[str, str]:
    """Slots for an event's cast, drawn in the order given: ``people=("person", "official")`` names two
    distinct people, ``cities=`` distinct towns, ``days=`` distinct weekdays."""
    slots: dict[str, str] = {}
    for kind, names in roles.items():
        slots.update(zip(names, _CAST[kind](rng, len(names)), strict=True))
    return slots


# --------------------------------------------------------------------------------------------------
# Slot samplers: an event's names and numbers. The order of the draws (not of the dict) fixes the
# random stream, so it must stay as it is for the bundled files to stay the same.
# --------------------------------------------------------------------------------------------------


def _crime_slots(rng: random.Random) -> dict[str, Any]:
    cast = _cast(rng, people=("person", "official"), cities=("city", "city2"), days=("day", "day2"))
    return {
        **cast,
        "last": cast["person"].split()[1],
        "age": rng.randint(19, 78),
        "num": rng.randint(12, 480),
        "goods": rng.choice(STOLEN_GOODS),
        "shops": rng.randint(3, 40),
        "months": rng.randint(2, 18),
        "region": rng.choice(REGIONS),
        "org": _org(rng),
        "money": rng.randint(2, 90) * 1000,
    }


def _business_slots(rng: random.Random) -> dict[str, Any]:
    cast = _cast(rng, people=("ceo", "official"))
    return {
        **cast,
        "org": _org(rng),
        "city": _city(rng),
        "day": rng.choice(WEEKDAYS),
        "jobs": rng.randint(40, 2400),
        "product": rng.choice(PRODUCTS),
        "money": rng.randint(12, 900),
        "month": rng.choice(MONTHS),
        "year": rng.randint(2031, 2049),
        "years": rng.randint(8, 60),
        "pct": rng.randint(2, 19),
    }


def _sport_slots(rng: random.Random) -> dict[str, Any]:
    cast = _cast(rng, cities=("city", "city2"), people=("scorer", "coach"))
    a = rng.randint(1, 6)
    cast |= _cast(rng, days=("day", "day2"))
    return {
        **cast,
        "team1": f"{cast['city']} {rng.choice(MASCOTS)}",
        "team2": f"{cast['city2']} {rng.choice(MASCOTS)}",
        "a": a,
        "b": rng.randint(0, a - 1),
        "cup": f"{rng.choice(REGIONS)} Cup",
        "minute": _ordinal(rng.randint(3, 90)),
        "crowd": rng.randint(800, 60000),
        "stadium": f"{rng.choice(ORG_HEADS)} Stadium",
        "years": rng.randint(3, 70),
    }


def _storm_slots(rng: random.Random) -> dict[str, Any]:
    return {
        **_cast(rng, cities=("city", "city2"), days=("day", "day2")),
        "homes": rng.randint(300, 90000),
        "region": rng.choice(REGIONS),
        "wind": rng.randint(80, 190),
        "place": rng.choice(ORG_HEADS) + " Point",
        "trees": rng.randint(3, 60),
        "official": _person(rng),
        "schools": rng.randint(4, 80),
    }


def _election_slots(rng: random.Random) -> dict[str, Any]:
    cast = _cast(rng, people=("person", "rival"))
    pct = rng.randint(41, 78)
    cast |= _cast(rng, days=("day", "day2"))
    return {
        **cast,
        "last": cast["person"].split()[1],
        "city": _city(rng),
        "pct": pct,
        "pct2": rng.randint(10, 100 - pct),
        "turnout": rng.randint(35, 88),
        "year": rng.randint(1961, 2019),
        "n": rng.randint(2, 30),
        "facility": rng.choice(FACILITIES),
        "job": rng.choice(JOBS),
    }


def _discovery_slots(rng: random.Random) -> dict[str, Any]:
    return {
        **_cast(rng, cities=("city", "city2"), people=("person", "official")),
        "org": _org(rng),
        "find": rng.choice(FINDS),
        "age": rng.randint(3, 40) * 100,
        "job": rng.choice(JOBS),
        "river": rng.choice(RIVERS),
        "length": rng.randint(4, 180),
        "material": rng.choice(MATERIALS),
        "month": rng.choice(MONTHS),
        "region": rng.choice(REGIONS),
    }


# --------------------------------------------------------------------------------------------------
# Key facts: (long phrasings, short phrasing). The first fact is the lead and is always reported.
# --------------------------------------------------------------------------------------------------

CRIME_FACTS: list[Fact] = [
    (
        [
            "Police in {city} arrested {person}, {age}, on {day} after {num} stolen {goods} were found "
            "in a warehouse near the old harbour.",
            "{person}, a {age}-year-old from {city}, was arrested on {day} when officers found {num} "
            "stolen {goods} in a warehouse.",
            "Officers in {city} detained {person}, {age}, on {day}, after discovering {num} stolen {goods} "
            "in a locked warehouse.",
        ],
        "{person}, {age}, arrested in {city} after {num} stolen {goods} were found",
    ),
    (
        [
            "{person} is due to appear before the district court in {city2} on {day2}, a police "
            "spokesperson said.",
            "A police spokesperson said {last} would appear before the district court in {city2} on {day2}.",
        ],
        "{last} is due in court in {city2} on {day2}",
    ),
    (
        [
            "Detective {official} said the {goods} had been taken from {shops} shops across the {region} "
            "region over {months} months.",
            "According to detective {official}, the {goods} were stolen from {shops} different shops in the "
            "{region} region during the past {months} months.",
        ],
        "Detective {official} says the {goods} were taken from {shops} shops over {months} months",
    ),
    (
        [
            "The owners of the shops have been offered {money} crowns in compensation by the {org}.",
            "The {org} has promised {money} crowns in compensation to the owners of the shops.",
        ],
        "The {org} offers {money} crowns to the shop owners",
    ),
    (
        [
            "{last} has denied any involvement, telling reporters that the {goods} were a gift from a "
            "stranger.",
            "Speaking outside the police station, {last} denied any involvement and said the {goods} had "
            "been a gift from a stranger.",
        ],
        "{last} denies involvement and says the {goods} were a gift",
    ),
]

BUSINESS_FACTS: list[Fact] = [
    (
        [
            "The {org} announced on {day} that it will open a new factory in {city}, creating {jobs} jobs.",
            "The {org} said on {day} it would build a factory in {city} that is expected to employ "
            "{jobs} people.",
            "A new factory run by the {org} will open in {city}, bringing {jobs} jobs to the town, the "
            "company said on {day}.",
        ],
        "The {org} will open a factory in {city}, creating {jobs} jobs",
    ),
    (
        [
            "The factory will produce {product} and is expected to cost about {money} million crowns.",
            "Building the plant, which will make {product}, will cost an estimated {money} million crowns.",
        ],
        "The plant will make {product} and cost {money} million crowns",
    ),
    (
        [
            "Chief executive {ceo} said production should begin in {month} {year}.",
            "{ceo}, the chief executive, told reporters that the first {product} would leave the factory "
            "in {month} {year}.",
        ],
        "Production is due to begin in {month} {year}, says chief executive {ceo}",
    ),
    (
        [
            "The mayor of {city}, {official}, welcomed the decision and said it was the largest investment "
            "in the town for {years} years.",
            "{official}, the mayor of {city}, called it the largest investment the town had seen in "
            "{years} years.",
        ],
        "Mayor {official} calls it the largest investment in {years} years",
    ),
    (
        [
            "Shares in the {org} rose by {pct} percent after the announcement.",
            "After the news, shares in the {org} climbed {pct} percent.",
        ],
        "Shares in the {org} rose {pct} percent",
    ),
]

SPORT_FACTS: list[Fact] = [
    (
        [
            "{team1} beat {team2} {a}-{b} in the final of the {cup} on {day}.",
            "{team1} won the {cup} on {day} after a {a}-{b} victory over {team2}.",
            "In the final of the {cup} on {day}, {team1} defeated {team2} {a}-{b}.",
        ],
        "{team1} beat {team2} {a}-{b} to win the {cup}",
    ),
    (
        [
            "{scorer} scored the winning goal in the {minute} minute.",
            "The decisive goal came from {scorer} in the {minute} minute.",
        ],
        "{scorer} scored the winner in the {minute} minute",
    ),
    (
        [
            "A crowd of {crowd} people watched the match at the {stadium}.",
            "The match at the {stadium} was watched by {crowd} spectators.",
        ],
        "{crowd} fans watched the match at the {stadium}",
    ),
    (
        [
            "It is the first time in {years} years that {team1} have won the trophy.",
            "{team1} had not won the trophy for {years} years.",
        ],
        "It is the first title for {team1} in {years} years",
    ),
    (
        [
            "Coach {coach} said the team would celebrate with a parade through {city} on {day2}.",
            "A parade through {city} is planned for {day2}, coach {coach} said.",
        ],
        "Coach {coach} says a parade will be held in {city} on {day2}",
    ),
]

STORM_FACTS: list[Fact] = [
    (
        [
            "A storm hit {city} on {day}, leaving {homes} homes without power.",
            "About {homes} homes in {city} lost power on {day} when a severe storm swept through the "
            "{region} region.",
            "On {day} a severe storm cut power to {homes} homes in {city}.",
        ],
        "Storm leaves {homes} homes in {city} without power",
    ),
    (
        [
            "Wind speeds of up to {wind} kilometres per hour were recorded near {place}.",
            "Near {place}, gusts reached {wind} kilometres per hour.",
        ],
        "Winds reached {wind} kilometres per hour near {place}",
    ),
    (
        [
            "The road between {city} and {city2} was closed after {trees} trees fell across it.",
            "{trees} fallen trees blocked the road between {city} and {city2}, which remains closed.",
        ],
        "The road between {city} and {city2} is closed by {trees} fallen trees",
    ),
    (
        [
            "{official}, who leads the regional emergency service, said power should be restored by {day2}.",
            "Power should be back by {day2}, according to {official} of the regional emergency service.",
        ],
        "Power is expected back by {day2}, says {official}",
    ),
    (
        [
            "{schools} schools in the {region} region will stay closed until the roads are cleared.",
            "Officials said {schools} schools in the {region} region would remain closed.",
        ],
        "{schools} schools in the {region} region remain closed",
    ),
]

ELECTION_FACTS: list[Fact] = [
    (
        [
            "{person} was elected mayor of {city} on {day} with {pct} percent of the vote.",
            "{person} won the race for mayor of {city} on {day}, taking {pct} percent of the vote.",
            "Voters in {city} chose {person} as their new mayor on {day}, with {pct} percent backing the "
            "winner.",
        ],
        "{person} is elected mayor of {city} with {pct} percent of the vote",
    ),
    (
        [
            "{rival}, the outgoing mayor, received {pct2} percent.",
            "The outgoing mayor, {rival}, finished with {pct2} percent.",
        ],
        "Outgoing mayor {rival} got {pct2} percent",
    ),
    (
        [
            "Turnout was {turnout} percent, the highest since {year}.",
            "With {turnout} percent of voters taking part, turnout was the highest since {year}.",
        ],
        "Turnout of {turnout} percent was the highest since {year}",
    ),
    (
        [
            "{last} has promised to build {n} new {facility} during the first year in office.",
            "During the campaign {last} promised {n} new {facility} within a year.",
        ],
        "{last} promises {n} new {facility}",
    ),
    (
        [
            "{last}, a former {job}, will take office on {day2}.",
            "The new mayor, who used to work as a {job}, takes office on {day2}.",
        ],
        "{last} takes office on {day2}",
    ),
]

DISCOVERY_FACTS: list[Fact] = [
    (
        [
            "Researchers from the {org} have identified a {find} found near {city} as about {age} years old.",
            "A {find} discovered near {city} is about {age} years old, researchers from the {org} said.",
        ],
        "The {org} dates a {find} found near {city} to about {age} years ago",
    ),
    (
        [
            "The {find} was found by {person}, a {job} who was walking along the {river} River.",
            "{person}, a local {job}, spotted the {find} while walking along the {river} River.",
        ],
        "It was found by {person} by the {river} River",
    ),
    (
        [
            "The {find} measures {length} centimetres and is made of {material}.",
            "Made of {material}, the {find} is {length} centimetres long.",
        ],
        "The {find} is {length} centimetres long and made of {material}",
    ),
    (
        [
            "It will be shown at the museum in {city2} from {month}.",
            "From {month}, visitors will be able to see the {find} at the museum in {city2}.",
        ],
        "It goes on display in {city2} from {month}",
    ),
    (
        [
            "{official}, a historian at the {org}, said the discovery could change what is known about the "
            "early history of the {region} region.",
            "The find could rewrite the early history of the {region} region, said {official}, a historian "
            "at the {org}.",
        ],
        "Historian {official} says it could change the history of the {region} region",
    ),
]


# Each event kind: (slot sampler, facts, title template, topic template).
EVENTS: dict[str, tuple[Callable[[random.Random], dict[str, Any]], list[Fact], str, str]] = {
    "crime": (_crime_slots, CRIME_FACTS, "Arrest in {city} Over Stolen {Goods}", "the arrest of {person}"),
    "business": (
        _business_slots,
        BUSINESS_FACTS,
        "New {Product} Factory for {city}",
        "a new factory in {city}",
    ),
    "sport": (_sport_slots, SPORT_FACTS, "{team1} Win the {cup}", "the final of the {cup}"),
    "storm": (_storm_slots, STORM_FACTS, "Storm Hits {city}", "the storm in {city}"),
    "election": (_election_slots, ELECTION_FACTS, "{city} Elects {person}", "the mayoral election in {city}"),
    "discovery": (
        _discovery_slots,
        DISCOVERY_FACTS,
        "Ancient {Find} Found Near {city}",
        "the {find} found near {city}",
    ),
}
EVENT_KINDS = list(EVENTS)


class _Event:
    """One sampled news event: slots, the chosen facts (indices into the kind's fact list)."""

    def __init__(self, rng: random.Random, n_facts: tuple[int, int], kind: str | None = None):
        self.kind = kind or rng.choice(EVENT_KINDS)
        sampler, facts, self._title, self._topic = EVENTS[self.kind]
        self.slots = sampler(rng)
        extra = {}
        for key, value in self.slots.items():
            if isinstance(value, str):
                extra[key[:1].upper() + key[1:]] = " ".join(_cap(w) for w in value.split())
        self.slots.update(extra)
        self.facts = facts
        k = rng.randint(*n_facts)
        self.chosen = [0] + sorted(_sample(rng, range(1, len(facts)), k - 1))

    def long(self, rng: random.Random, i: int) -> str:
        return _cap(rng.choice(self.facts[i][0]).format(**self.slots))

    def short(self, i: int) -> str:
        return _cap(self.facts[i][1].format(**self.slots))

    def title(self) -> str:
        return self._title.format(**self.slots)

    def topic(self) -> str:
        return self._topic.format(**self.slots)
