"""A built-in synthetic corpus and sentiment set, so ``dvc repro`` works offline on a laptop CPU.

Why synthetic: the default pipeline must finish in minutes on two CPU cores with no network, and
the numbers it produces must still mean something. The text below is templated but varied
(stories, places, people, objects, dialogues, recipes, weather reports and reviews drawn from a
few hundred words), so a small GPT's validation loss falls visibly within a few hundred steps.

The sentiment set is built so that the label depends on *composition*, not on single words:
negation flips a clause ("the soup was not good" is negative), in a contrast the second clause
decides ("the room was cramped but the staff were wonderful" is positive; "although A, B" → B),
and intensifiers and hedges ("very", "a bit") never flip it. The same
clause grammar appears in the pretraining reviews, so pretraining helps fine-tuning.

Everything is deterministic for a given ``seed`` (``random.Random`` with an int seed is stable
across Python versions), and a corpus of 6,000 documents takes well under a second to build.
"""

from __future__ import annotations

import random
from collections.abc import Callable

__all__ = [
    "LABELS",
    "NEGATIVE_WORDS",
    "NEGATORS",
    "POSITIVE_WORDS",
    "generate_corpus",
    "generate_labeled",
]

LABELS = ["negative", "positive"]

# --------------------------------------------------------------------------- word lists


def _words(text: str) -> list[str]:
    """Word lists are written as one string: compact to read and to extend."""
    return text.split()


FEMALE_NAMES = _words(
    "Anna Mara Lena Clara Rosa Ida Nora Elsa Greta Hanna Iris Julia Lucy Maya Nina Olive Ruth "
    "Sara Tessa Vera Alice Bella Daisy Edith Fiona Grace Helen Irene Jane Kate Laura Mia Paula "
    "Rita Sophie Tilda Ursula Wendy Zoe Agnes"
)
MALE_NAMES = _words(
    "Tom Ben Sam Leo Max Hugo Oscar Felix Jonas Karl Luke Mark Noah Owen Paul Peter Ralph Simon "
    "Theo Victor Walter Adam Carl David Emil Frank George Henry Isaac Jack Liam Martin Ned Oliver "
    "Robin Stefan Tobias Arthur Bruno Dan"
)
SURNAMES = _words(
    "Miller Baker Carter Fisher Hill Wood Brook Stone Field Marsh Green Clay Webb Turner Cooper "
    "Fletcher Mason Porter Shaw Ward Hale Lowe Frost Rowe Dale Lane Moss Reed Snow Swan Thorn "
    "Vale West Wells Young Abbot Bell Cole Finch Grey"
)
PET_NAMES = _words(
    "Biscuit Pepper Mittens Shadow Clover Pebble Rusty Socks Maple Button Ginger Whiskers Patch "
    "Hazel Juniper Toffee Sprout Bramble Crumble Nutmeg"
)

PROFESSIONS = _words(
    "baker carpenter teacher fisher nurse farmer painter doctor tailor potter librarian gardener "
    "sailor miller blacksmith musician shopkeeper engineer cook writer weaver shepherd mechanic "
    "pilot beekeeper clockmaker bookbinder glassblower jeweler ferryman innkeeper mapmaker "
    "stonemason photographer architect florist watchmaker"
)

ANIMALS = _words(
    "cat dog fox owl rabbit horse goat sheep crow deer bear mouse duck frog badger hedgehog "
    "squirrel heron swan otter wolf pony donkey goose robin sparrow beaver lamb hare tortoise"
)

TOWN_PREFIXES = _words(
    "Ash Bright Cold Elm Fair Green High Long Mill North Oak Red Rose Salt Stone West White Wind "
    "Wolf Lake Amber Birch Clear Deep East Frost Gold Hazel Iron Maple"
)
TOWN_SUFFIXES = _words(
    "ford field haven wick bury dale ton mouth bridge brook stead more gate hill wood"
)
RIVER_NAMES = _words(
    "Avon Brenn Calder Dove Esk Frome Glen Isis Kenn Lune Mersey Nene Otter Ribble Severn Tamar "
    "Ure Wye Yare Tees"
)

PLACE_ADJECTIVES = _words(
    "quiet busy small old sleepy windy crowded peaceful pretty lively ancient charming remote "
    "colorful tidy foggy sunny modest famous hidden"
)
PLACE_KINDS = ["town", "village", "city", "port", "hamlet"]
LANDSCAPES = [
    "on the banks of the {river}",
    "at the foot of the {hills} hills",
    "by the sea",
    "at the edge of a great forest",
    "in a wide green valley",
    "beside a deep blue lake",
    "on a rocky island",
    "high in the mountains",
    "among rolling fields of wheat",
    "near an old stone bridge",
]

OBJECTS = _words(
    "lamp chair table kettle clock bicycle basket mirror coat umbrella backpack teapot bookshelf "
    "candle jar bowl spoon hat scarf blanket pillow desk drawer box lantern rope ladder bucket "
    "bell compass map telescope violin flute drum radio"
)
MATERIALS = _words(
    "wood oak pine steel brass glass leather wool cotton clay copper silver iron bamboo linen stone"
)
COLORS = _words("red blue green yellow grey brown black white orange purple silver golden pink")
OBJECT_ADJECTIVES = _words(
    "old new tiny large heavy light shiny dusty broken beautiful strange simple plain sturdy "
    "delicate worn polished"
)

FOODS = _words(
    "bread soup cheese apples pears honey fish rice beans potatoes carrots onions garlic tomatoes "
    "lemons eggs butter milk flour sugar mushrooms cabbage peas plums cherries oats nuts spinach "
    "leeks pumpkin"
)
DISH_KINDS = _words("soup stew pie cake salad bread pudding tart porridge")
UNITS = ["cups", "grams", "handfuls", "pounds"]
RECIPE_PRODUCE = _words(
    "apples pears potatoes carrots onions tomatoes lemons mushrooms cabbage peas plums cherries "
    "pumpkin spinach leeks beans lentils parsnips beets"
)

FEELINGS = _words(
    "happy tired worried proud excited surprised curious calm nervous hopeful cheerful sleepy busy"
)
TRAITS = _words(
    "kind patient clever honest generous brave careful funny quiet gentle cheerful stubborn "
    "thoughtful curious loyal"
)
HOBBIES = [
    "read old books",
    "walk along the river",
    "play the violin",
    "grow tomatoes",
    "paint small pictures",
    "bake bread",
    "watch the birds",
    "fix old clocks",
    "swim in the lake",
    "play chess",
    "write letters",
    "ride a bicycle",
    "sing in the choir",
    "collect stones",
    "knit warm scarves",
    "cook for friends",
]
ACTIVITIES = [
    "go for a walk",
    "have some tea",
    "visit the market",
    "go fishing",
    "play a game of chess",
    "see the new play",
    "bake a cake",
    "climb the hill",
    "swim in the lake",
    "read in the garden",
]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
MONTHS = _words(
    "January February March April May June July August September October November December"
)
SEASONS = ["spring", "summer", "autumn", "winter"]
SEASON_FEATURES = {
    "spring": "the orchards are full of blossom",
    "summer": "the days are long and the evenings are warm",
    "autumn": "the trees turn red and gold",
    "winter": "the rooftops are covered in snow",
}
WEATHER = ["sunny", "cloudy", "rainy", "foggy", "windy", "snowy", "stormy", "clear"]
TIMES_OF_DAY = ["morning", "afternoon", "evening"]
NUMBER_WORDS = _words("two three four five six seven eight nine ten")

# ---------------------------------------------------------------- sentiment lexicon
# Aspect phrases by domain; each has a kind (which adjectives fit) and a number (was / were).

_ASPECTS: dict[str, list[tuple[str, str, bool]]] = {
    # (noun phrase, kind, plural)
    "restaurant": [
        ("the soup", "food", False),
        ("the bread", "food", False),
        ("the pasta", "food", False),
        ("the dessert", "food", False),
        ("the coffee", "food", False),
        ("the fish", "food", False),
        ("the salad", "food", False),
        ("the portions", "thing", True),
        ("the service", "people", False),
        ("the waiter", "people", False),
        ("the staff", "people", True),
        ("the menu", "thing", False),
        ("the music", "thing", False),
        ("the terrace", "place", False),
        ("the dining room", "place", False),
    ],
    "hotel": [
        ("the room", "place", False),
        ("the bed", "thing", False),
        ("the bathroom", "place", False),
        ("the lobby", "place", False),
        ("the pool", "place", False),
        ("the breakfast", "food", False),
        ("the staff", "people", True),
        ("the receptionist", "people", False),
        ("the towels", "thing", True),
        ("the view", "thing", False),
        ("the location", "thing", False),
        ("the garden", "place", False),
    ],
    "film": [
        ("the plot", "work", False),
        ("the acting", "work", False),
        ("the story", "work", False),
        ("the ending", "work", False),
        ("the dialogue", "work", False),
        ("the soundtrack", "work", False),
        ("the jokes", "work", True),
        ("the characters", "work", True),
        ("the actors", "people", True),
        ("the director", "people", False),
        ("the cinema", "place", False),
    ],
    "product": [
        ("the battery", "device", False),
        ("the screen", "device", False),
        ("the camera", "device", False),
        ("the keyboard", "device", False),
        ("the speaker", "device", False),
        ("the design", "thing", False),
        ("the instructions", "thing", True),
        ("the buttons", "device", True),
        ("the packaging", "thing", False),
        ("the support team", "people", False),
    ],
    "book": [
        ("the story", "work", False),
        ("the writing", "work", False),
        ("the characters", "work", True),
        ("the ending", "work", False),
        ("the first chapter", "work", False),
        ("the author", "people", False),
        ("the cover", "thing", False),
    ],
}

_POS_ADJ: dict[str, list[str]] = {
    "any": _words(
        "good great excellent wonderful lovely fantastic superb pleasant brilliant perfect "
        "amazing impressive nice fine outstanding"
    ),
    "food": ["delicious", "tasty", "fresh", "flavorful", "hearty"],
    "people": ["friendly", "helpful", "polite", "welcoming", "attentive"],
    "place": ["clean", "comfortable", "spacious", "cozy", "bright"],
    "work": ["gripping", "moving", "funny", "clever", "charming"],
    "device": ["reliable", "sturdy", "fast", "sharp", "responsive"],
    "thing": ["clear", "elegant", "generous", "beautiful"],
}
_NEG_ADJ: dict[str, list[str]] = {
    "any": _words(
        "bad terrible awful horrible poor dreadful disappointing mediocre annoying unpleasant"
    ),
    "food": ["bland", "stale", "greasy", "soggy", "tasteless"],
    "people": ["rude", "unhelpful", "careless", "grumpy", "unfriendly"],
    "place": ["dirty", "cramped", "noisy", "shabby", "gloomy"],
    "work": ["boring", "dull", "predictable", "confusing", "silly"],
    "device": ["flimsy", "unreliable", "sluggish", "faulty", "fragile"],
    "thing": ["ugly", "confusing", "cheap", "useless"],
}
_POS_VERBS = ["loved", "enjoyed", "liked", "adored", "appreciated"]
_NEG_VERBS = ["hated", "disliked", "despised", "regretted"]
_POS_VERB_BASE = ["like", "enjoy", "love"]  # negated: "I did not like the soup"

INTENSIFIERS = ["very", "really", "extremely", "incredibly", "truly", "so", "quite"]
HEDGES = ["fairly", "rather", "somewhat", "pretty", "a bit", "a little"]
_EXTREME = frozenset(
    _words(
        "excellent perfect superb outstanding fantastic amazing brilliant wonderful terrible "
        "awful horrible dreadful useless"
    )
)
_EXTREME_INTENSIFIERS = ["absolutely", "truly", "really"]
_AFTER_NOT = ["very", "particularly", "really", "that"]
# After "was": these flip the clause. Listed so tests and readers can check the rule.
NEGATORS = ["not", "never", "not at all"]

POSITIVE_WORDS: frozenset[str] = frozenset(
    [w for ws in _POS_ADJ.values() for w in ws] + _POS_VERBS + _POS_VERB_BASE + ["recommend"]
)
NEGATIVE_WORDS: frozenset[str] = frozenset([w for ws in _NEG_ADJ.values() for w in ws] + _NEG_VERBS)

_VENUE_WORDS = {
    "restaurant": ["this restaurant", "this place", "this cafe", "this bistro"],
    "hotel": ["this hotel", "this place", "this inn", "this guesthouse"],
    "film": ["this film", "this movie", "this show"],
    "product": ["this phone", "this laptop", "this tablet", "this speaker", "this product"],
    "book": ["this book", "this novel", "this story"],
}
# Neutral context sentences: no lexicon words, no negators, so they never decide a label.
_FILLERS = {
    "restaurant": [
        "We went there on a {day} evening.",
        "I had lunch there with my {relative}.",
        "We booked a table for {num}.",
        "We ordered {food} and a pot of tea.",
        "It is a small place near the station.",
    ],
    "hotel": [
        "We stayed there for {num} nights.",
        "I booked it for a trip with my {relative}.",
        "The hotel is close to the harbor.",
        "We arrived late on a {day}.",
        "Our room was on the third floor.",
    ],
    "film": [
        "I watched it on a {day} with my {relative}.",
        "It runs for about two hours.",
        "We saw it at the cinema in {town}.",
        "It came out last {month}.",
        "I went in knowing very little about it.",
    ],
    "product": [
        "I bought it last {month}.",
        "I have used it every day for {num} weeks.",
        "It arrived on a {day} morning.",
        "I got it as a present from my {relative}.",
        "I use it mostly for work.",
    ],
    "book": [
        "I read it on a trip to {town}.",
        "My {relative} gave it to me last {month}.",
        "It has about three hundred pages.",
        "I finished it in {num} days.",
        "It is the second book in a series.",
    ],
}
_RELATIVES = ["sister", "brother", "mother", "father", "friend", "cousin", "aunt", "uncle"]
_OPENERS = ["", "", "", "Honestly, ", "Overall, ", "In short, ", "I think ", "To me, "]


# --------------------------------------------------------------------------- helpers


def _article(word: str) -> str:
    """'a' or 'an' by the first letter; the word lists avoid the exceptions (hour, unit)."""
    return "an" if word[:1].lower() in "aeiou" else "a"


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _town(rng: random.Random) -> str:
    return rng.choice(TOWN_PREFIXES) + rng.choice(TOWN_SUFFIXES)


def _person(rng: random.Random) -> tuple[str, str, str, str]:
    """(name, subject pronoun, object pronoun, possessive), consistent for one document."""
    if rng.random() < 0.5:
        return rng.choice(FEMALE_NAMES), "she", "her", "her"
    return rng.choice(MALE_NAMES), "he", "him", "his"


def _join_list(items: list[str]) -> str:
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + " and " + items[-1]


def _fill(rng: random.Random, template: str) -> str:
    return template.format(
        day=rng.choice(DAYS),
        relative=rng.choice(_RELATIVES),
        num=rng.choice(NUMBER_WORDS),
        food=rng.choice(FOODS),
        town=_town(rng),
        month=rng.choice(MONTHS),
    )


# ------------------------------------------------------------------ sentiment clauses


def _modifier(rng: random.Random, adj: str, negator: str | None) -> str:
    """An intensifier or hedge (never changes the polarity), or nothing; kept idiomatic."""
    r = rng.random()
    if negator is not None:
        # "not very good", "not particularly bad"; other negators take no modifier
        return rng.choice(_AFTER_NOT) + " " if negator == "not" and r < 0.3 else ""
    if adj in _EXTREME:
        return rng.choice(_EXTREME_INTENSIFIERS) + " " if r < 0.25 else ""
    if r < 0.25:
        return rng.choice(INTENSIFIERS) + " "
    if r < 0.37:
        return rng.choice(HEDGES) + " "
    return ""


def _clause(rng: random.Random, domain: str, polarity: int, used: set[str]) -> str:
    """One clause whose sentiment is ``polarity`` (+1 / -1).

    Forms: "the soup was (very) good", "the soup was not (very) bad" (negation flips the
    adjective), "I loved the soup", "I did not like the soup", "I would (not) recommend it".
    """
    aspects = [a for a in _ASPECTS[domain] if a[0] not in used] or _ASPECTS[domain]
    phrase, kind, plural = rng.choice(aspects)
    used.add(phrase)
    form = rng.random()
    if form > 0.9 and "recommend" in used:
        form = 0.0  # one recommendation per sentence reads naturally
    if form < 0.72:
        negate = rng.random() < 0.4
        base = -polarity if negate else polarity
        pool = _POS_ADJ if base > 0 else _NEG_ADJ
        adj = rng.choice(pool[kind] + pool["any"]) if rng.random() < 0.6 else rng.choice(pool[kind])
        verb = "were" if plural else "was"
        if not negate:
            return f"{phrase} {verb} {_modifier(rng, adj, None)}{adj}"
        neg = rng.choice(NEGATORS)
        mod = _modifier(rng, adj, neg)
        if neg == "not at all":
            return f"{phrase} {verb} not {adj} at all"
        if neg == "not" and rng.random() < 0.3:
            return f"{phrase} {verb}n't {mod}{adj}"
        return f"{phrase} {verb} {neg} {mod}{adj}"
    if form < 0.9:
        if polarity < 0 and rng.random() < 0.5:
            aux = rng.choice(["did not", "didn't", "did not really"])
            return f"I {aux} {rng.choice(_POS_VERB_BASE)} {phrase}"
        verb = rng.choice(_POS_VERBS if polarity > 0 else _NEG_VERBS)
        adv = rng.choice(["really ", "truly ", "", "", ""])
        return f"I {adv}{verb} {phrase}"
    used.add("recommend")
    venue = rng.choice(_VENUE_WORDS[domain])
    if polarity > 0:
        adv = rng.choice(["", "", "highly ", "definitely "])
        return f"I would {adv}recommend {venue}"
    return f"I would {rng.choice(['not', 'never'])} recommend {venue}"


def _sentiment_sentence(rng: random.Random, domain: str, label: int) -> str:
    """One sentence (one or two clauses) whose overall label is ``label`` (1 pos, 0 neg).

    Shapes: "A." / "A and A'." (same polarity), "A but B." / "Although A, B." (opposite
    polarities: B decides).
    """
    pol = 1 if label == 1 else -1
    used: set[str] = set()
    shape = rng.random()
    if shape < 0.35:
        body = _clause(rng, domain, pol, used)
    elif shape < 0.5:
        a = _clause(rng, domain, pol, used)
        b = _clause(rng, domain, pol, used)
        body = f"{a} and {b}"
    elif shape < 0.85:
        a = _clause(rng, domain, -pol, used)
        b = _clause(rng, domain, pol, used)
        body = f"{a}, but {b}" if rng.random() < 0.5 else f"{a} but {b}"
    else:
        a = _clause(rng, domain, -pol, used)
        b = _clause(rng, domain, pol, used)
        body = f"{rng.choice(['although', 'though', 'while'])} {a}, {b}"
    opener = rng.choice(_OPENERS)
    if body.startswith("I ") and opener in ("I think ", "To me, "):
        opener = ""
    end = "!" if rng.random() < 0.1 else "."
    return _cap(opener + body) + end


def _labeled_text(rng: random.Random, label: int) -> str:
    domain = rng.choice(list(_ASPECTS))
    parts = []
    if rng.random() < 0.3:
        parts.append(_fill(rng, rng.choice(_FILLERS[domain])))
    parts.append(_sentiment_sentence(rng, domain, label))
    return " ".join(parts)


def generate_labeled(n: int, seed: int) -> list[tuple[str, str]]:
    """``n`` unique (text, label) pairs, labels "negative"/"positive", balanced (±1).

    The label follows from composition (see the module docstring): negation flips a clause,
    in "A but B" and "although A, B" the clause B decides, intensifiers and hedges do not
    change it. Texts are unique within one call: split one call's output into train / val /
    test rather than calling twice with different seeds (which could repeat a text).
    """
    if n < 0:
        raise ValueError("n must be >= 0")
    rng = random.Random(seed)
    labels = [i % 2 for i in range(n)]
    rng.shuffle(labels)
    seen: set[str] = set()
    out: list[tuple[str, str]] = []
    for label in labels:
        for _ in range(1000):
            text = _labeled_text(rng, label)
            if text not in seen:
                break
        seen.add(text)
        out.append((text, LABELS[label]))
    return out


# ------------------------------------------------------------------------- documents


def _story(rng: random.Random) -> str:
    name, he, him, his = _person(rng)
    friend, fhe, _, _ = _person(rng)
    job = rng.choice(PROFESSIONS)
    friend_job = rng.choice(PROFESSIONS)
    town = _town(rng)
    place_adj = rng.choice(PLACE_ADJECTIVES)
    kind = rng.choice(PLACE_KINDS)
    land = rng.choice(LANDSCAPES).format(river="river " + rng.choice(RIVER_NAMES), hills=_town(rng))
    trait = rng.choice(TRAITS)
    obj = rng.choice(OBJECTS)
    obj_adj = rng.choice(OBJECT_ADJECTIVES)
    color = rng.choice(COLORS)
    material = rng.choice(MATERIALS)
    animal = rng.choice(ANIMALS)
    season = rng.choice(SEASONS)
    day = rng.choice(DAYS)
    opening = rng.choice(["Once upon a time", "Long ago", "Many years ago", "Not so long ago"])
    p1 = (
        f"{opening}, in {_article(place_adj)} {place_adj} {kind} {land} called {town}, "
        f"there lived {_article(trait)} {trait} {job} named {name}. "
        f"Every morning {he} would {rng.choice(HOBBIES)} before opening {his} little shop, "
        f"and every evening {he} would sit by the window with {his} {animal}."
    )
    found_where = rng.choice(
        ["under an old tree", "at the bottom of the well", "behind the bakery", "in the attic",
         "on the riverbank", "in the middle of the road", "inside a hollow log", "in the snow"]
    )  # fmt: skip
    p2 = (
        f"One {season} {day}, {name} found {_article(obj_adj)} {obj_adj} {obj} {found_where}. "
        f"It was made of {material} and painted {color}, and nobody in {town} had ever seen "
        f"anything like it. {_cap(he)} felt {rng.choice(FEELINGS)} and a little "
        f"{rng.choice(FEELINGS)}."
    )
    goal = rng.choice(
        ["find out who had lost it", "fix it before the winter", "give it to the mayor",
         "learn where it came from", "keep it safe until spring", "show it to the whole town"]
    )  # fmt: skip
    quote = rng.choice(
        [f"I have seen one of these before, in {_town(rng)}",
         "Bring it back tomorrow and I will take a look",
         f"That {obj} belongs to the old {rng.choice(PROFESSIONS)} on the hill",
         f"You must be careful with it, {name}",
         f"Nobody has made {obj}s like that for a hundred years"]
    )  # fmt: skip
    p3 = (
        f"{name} decided to {goal}. {_cap(he)} walked to the market and asked {friend}, "
        f'the {friend_job}, for help. "{quote}," said {friend}. {_cap(fhe)} looked at the '
        f"{obj} for a long time and then smiled."
    )
    ending = rng.choice(
        [f"In the end, {name} gave the {obj} to the children of {town}, who still keep it "
         f"in the square.",
         f"In the end, the {obj} went back to its owner, and {name} got a basket of "
         f"{rng.choice(FOODS)} as a thank you.",
         f"In the end, {name} and {friend} became good friends, and they repaired the {obj} "
         f"together.",
         f"In the end, {name} put the {obj} on the shelf above {his} bed, where it stays to "
         f"this day."]
    )  # fmt: skip
    p4 = f"{ending} From that day on, {he} was known as the {trait} {job} of {town}."
    paragraphs = [p1, p2, p3, p4]
    if rng.random() < 0.3:
        paragraphs.insert(3, _fable_paragraph(rng, him))
    return "\n\n".join(paragraphs)


def _fable_paragraph(rng: random.Random, obj_pronoun: str) -> str:
    a, b = rng.sample(ANIMALS, 2)
    return (
        f"On the way home, a {a} and {_article(b)} {b} followed {obj_pronoun} along the road. "
        f"The {a} was {rng.choice(TRAITS)} and the {b} was {rng.choice(TRAITS)}, and they "
        f"argued about the weather all the way to the {rng.choice(['bridge', 'gate', 'mill'])}."
    )


def _place(rng: random.Random) -> str:
    town = _town(rng)
    adj = rng.choice(PLACE_ADJECTIVES)
    kind = rng.choice(PLACE_KINDS)
    river = rng.choice(RIVER_NAMES)
    land = rng.choice(LANDSCAPES).format(river="river " + river, hills=_town(rng))
    people = rng.randrange(2, 90) * 100
    shops = rng.sample(
        ["bakeries", "bookshops", "tea rooms", "fish stalls", "flower shops", "workshops",
         "small inns", "cheese shops", "toy makers", "tailors"], 3
    )  # fmt: skip
    season = rng.choice(SEASONS)
    product = rng.choice(
        ["honey", "cheese", "pottery", "wool", "apples", "boats", "clocks", "bread", "glass"]
    )
    month = rng.choice(MONTHS)
    acts = rng.sample(
        ["walk along the old walls", "visit the museum", "take a boat on the river",
         "climb the bell tower", "eat at the harbor", "watch the sunset from the hill",
         "explore the market", "hire bicycles", "swim in the lake", "listen to the band"], 3
    )  # fmt: skip
    sentences = [
        f"{town} is {_article(adj)} {adj} {kind} {land}.",
        f"About {people} people live there.",
        f"The main street is lined with {_join_list(shops)}.",
        f"{_cap(season)} is the best time to visit, when {SEASON_FEATURES[season]}.",
        f"The {kind} is known for its {product}, and every {month} there is a festival "
        f"with music, games and food.",
        f"Visitors can {acts[0]}, {acts[1]} or simply {acts[2]}.",
    ]
    if rng.random() < 0.5:
        sentences.append(
            f"The nearest {rng.choice(['station', 'harbor', 'market town'])} is {_town(rng)}, "
            f"{rng.choice(NUMBER_WORDS)} miles to the {rng.choice(['north', 'south', 'east', 'west'])}."
        )
    if rng.random() < 0.4:
        gear = rng.choice(["umbrella", "warm coat", "hat", "extra sweater"])
        sentences.append(
            f"The weather is often {rng.choice(WEATHER)} in {rng.choice(MONTHS)}, so bring "
            f"{_article(gear)} {gear}."
        )
    return " ".join(sentences)


def _profile(rng: random.Random) -> str:
    name, he, him, his = _person(rng)
    surname = rng.choice(SURNAMES)
    age = rng.randrange(19, 80)
    job = rng.choice(PROFESSIONS)
    town = _town(rng)
    years = rng.randrange(2, min(age - 16, 50))
    hob = rng.sample(HOBBIES, 2)
    t1, t2 = rng.sample(TRAITS, 2)
    animal = rng.choice(ANIMALS)
    pet = rng.choice(PET_NAMES)
    routine = rng.choice(
        ["starts work at six and finishes at noon", "opens the workshop before sunrise",
         "walks to work along the river", "spends the mornings with customers",
         "works late into the evening"]
    )  # fmt: skip
    family = rng.choice(["sister", "brother", "parents", "grandmother", "two children", "husband",
                         "wife", "friend"])  # fmt: skip
    text = (
        f"{name} {surname} is a {age}-year-old {job} from {town}. "
        f"{_cap(he)} has worked as {_article(job)} {job} for {years} years. "
        f"Every day {he} {routine}. "
        f"In {his} free time, {he} likes to {hob[0]} and {hob[1]}. "
        f"{_cap(he)} lives with {his} {family} and {_article(animal)} {animal} named {pet}. "
        f"Friends describe {him} as {t1} and {t2}."
    )
    return text


def _object(rng: random.Random) -> str:
    obj = rng.choice(OBJECTS)
    adj = rng.choice(OBJECT_ADJECTIVES)
    material = rng.choice(MATERIALS)
    color = rng.choice(COLORS)
    height = rng.randrange(5, 200)
    weight = rng.randrange(1, 40) / 2
    price = rng.randrange(3, 300)
    use = rng.choice(
        ["a kitchen", "a small flat", "long journeys", "a garden", "a child's room", "an office",
         "cold evenings", "a gift"]
    )  # fmt: skip
    care = rng.choice(
        ["a soft dry cloth", "warm water and soap", "a little oil once a year", "a gentle brush"]
    )
    maker = f"{rng.choice(MALE_NAMES + FEMALE_NAMES)} {rng.choice(SURNAMES)}"
    maker_job = rng.choice(PROFESSIONS)
    return (
        f"{_cap(adj)} {material} {obj}\n\n"
        f"This {obj} is made of {material} and painted {color}. It is {height} centimeters "
        f"tall and weighs {weight:g} kilograms. It was made by {maker}, {_article(maker_job)} {maker_job} "
        f"from {_town(rng)}. It is ideal for {use}. Clean it with {care}.\n\n"
        f"Price: {price} coins."
    )


def _dialogue(rng: random.Random) -> str:
    a, _, _, _ = _person(rng)
    b, _, _, _ = _person(rng)
    while b == a:
        b = rng.choice(MALE_NAMES + FEMALE_NAMES)
    tod = rng.choice(TIMES_OF_DAY)
    feel = rng.choice(FEELINGS)
    act = rng.choice(ACTIVITIES)
    when = rng.choice(["tomorrow", "this weekend", "on " + rng.choice(DAYS), "after lunch"])
    reason = rng.choice(
        [f"I just came back from {_town(rng)}.", "I slept very well last night.",
         f"My {rng.choice(ANIMALS)} woke me up early.", "I have a lot of work today.",
         f"I finished painting the {rng.choice(OBJECTS)}."]
    )  # fmt: skip
    lines = [
        f"{a}: Good {tod}, {b}. How are you?",
        f"{b}: I am {feel}, thank you. {reason}",
        f"{a}: Would you like to {act} with me {when}?",
    ]
    if rng.random() < 0.6:
        lines += [
            f"{b}: Yes, I would love to. What time?",
            f"{a}: Let us meet at {rng.randrange(1, 12)} o'clock by the "
            f"{rng.choice(['fountain', 'station', 'old bridge', 'market', 'library'])}.",
            f"{b}: Good. I will bring some {rng.choice(FOODS)}.",
        ]
    else:
        lines += [
            f"{b}: I am sorry, I cannot. I have to help my {rng.choice(_RELATIVES)}.",
            f"{a}: That is all right. Maybe next week?",
            f"{b}: Yes, next week would be perfect.",
        ]
    lines.append(f"{a}: See you soon, {b}.")
    return "\n".join(lines)


def _recipe(rng: random.Random) -> str:
    main, second, third = rng.sample(RECIPE_PRODUCE, 3)
    dish = rng.choice(DISH_KINDS)
    style = rng.choice(["simple", "easy", "warm", "quick", "old-fashioned", "country", "spiced"])
    title = f"{style} {main} {dish}"
    ing_lines = [
        f"- {rng.randrange(2, 6)} {rng.choice(UNITS)} of {x}" for x in (main, second, third)
    ]
    for extra in rng.sample(["salt", "butter", "flour", "sugar", "honey", "pepper"], 2):
        ing_lines.append(f"- {rng.randrange(2, 5)} {rng.choice(['spoons', 'pinches'])} of {extra}")
    steps = [
        f"Wash and chop the {main}.",
        f"Heat a pan over {rng.choice(['low', 'medium', 'high'])} heat and melt the butter.",
        f"Add the {main} and cook for {rng.randrange(3, 20)} minutes.",
        f"Stir in the {second} and the {third}.",
        f"Season with salt and let it rest for {rng.randrange(2, 15)} minutes.",
    ]
    if dish in ("cake", "pie", "bread", "tart", "pudding"):
        steps.insert(4, f"Bake in a hot oven for {rng.randrange(20, 60)} minutes until golden.")
    return (
        f"How to make {title}\n\nIngredients:\n"
        + "\n".join(ing_lines)
        + "\n\nSteps:\n"
        + "\n".join(f"{i}. {s}" for i, s in enumerate(steps, 1))
        + f"\n\nServe {rng.choice(['warm', 'cold', 'with bread', 'with tea', 'at once'])}. "
        f"This recipe makes enough for {rng.choice(NUMBER_WORDS)} people."
    )


def _weather(rng: random.Random) -> str:
    town = _town(rng)
    day = rng.choice(DAYS)
    month = rng.choice(MONTHS)
    w1, w2 = rng.sample(WEATHER, 2)
    t1 = rng.randrange(-5, 30)
    t2 = t1 + rng.randrange(1, 8)
    wind = rng.choice(["north", "south", "east", "west"])
    return (
        f"Weather for {town}, {day} {rng.randrange(1, 29)} {month}\n\n"
        f"The morning will be {w1} with temperatures around {t1} degrees. In the afternoon "
        f"it will turn {w2} and the temperature will rise to {t2} degrees. A light wind will "
        f"blow from the {wind}. Tomorrow will be {rng.choice(WEATHER)}, so farmers and "
        f"fishers should plan ahead."
    )


def _review(rng: random.Random) -> str:
    label = rng.randrange(2)
    domain = rng.choice(list(_ASPECTS))
    stars = rng.choice([4, 5]) if label == 1 else rng.choice([1, 2])
    name = f"{rng.choice(MALE_NAMES + FEMALE_NAMES)} from {_town(rng)}"
    body = [_fill(rng, rng.choice(_FILLERS[domain]))]
    for _ in range(rng.randrange(2, 4)):
        body.append(_sentiment_sentence(rng, domain, label))
    verdict = "Recommended." if label == 1 else "Not recommended."
    return f"Review by {name}\nRating: {stars} out of 5\n\n" + " ".join(body) + f" {verdict}"


_GENERATORS: list[tuple[Callable[[random.Random], str], float]] = [
    (_story, 0.2),
    (_place, 0.13),
    (_profile, 0.12),
    (_object, 0.1),
    (_dialogue, 0.12),
    (_recipe, 0.1),
    (_weather, 0.08),
    (_review, 0.15),
]

_SHORT_JUNK = ["ok", "Hello.", "   ", "\n\n\t", "", "Thanks!", "see above", "...", "TODO", "x"]


def _with_whitespace_junk(rng: random.Random, doc: str) -> str:
    """Same text after normalization: extra spaces, trailing spaces, CRLF, blank-line runs."""
    out = doc.replace(". ", ".   ", 3).replace("\n", "  \r\n")
    return "  " + out + "\n\n\n\n   "


def _with_control_chars(rng: random.Random, doc: str) -> str:
    """Control characters that normalization strips; the document itself is worth keeping."""
    pos = sorted(rng.sample(range(len(doc)), min(3, len(doc))))
    chars = ["\x00", "\x07", "\x1b", "\x0b", "\x7f"]
    pieces, last = [], 0
    for p in pos:
        pieces += [doc[last:p], rng.choice(chars)]
        last = p
    pieces.append(doc[last:])
    return "".join(pieces)


def generate_corpus(n_documents: int, seed: int) -> list[str]:
    """``n_documents`` English-like documents, deterministic for ``seed``.

    About 1 % are exact duplicates of earlier documents, 0.5 % are whitespace variants of
    earlier documents (duplicates once normalized), 0.5 % carry control characters, and 1 % are
    too short or blank, so the clean stage has measurable work. Roughly 0.5 KB per document.
    """
    if n_documents < 0:
        raise ValueError("n_documents must be >= 0")
    rng = random.Random(seed)
    n_junk = 0
    if n_documents >= 10:
        n_dup = max(1, n_documents // 100)
        n_ws = max(1, n_documents // 200)
        n_ctrl = max(1, n_documents // 200)
        n_short = max(1, n_documents // 100)
        n_junk = n_dup + n_ws + n_short  # control-char docs replace good ones in place
    n_good = n_documents - n_junk
    funcs = [f for f, _ in _GENERATORS]
    weights = [w for _, w in _GENERATORS]
    docs = [rng.choices(funcs, weights)[0](rng) for _ in range(n_good)]
    if n_junk:
        for _ in range(n_ctrl):
            i = rng.randrange(n_good)
            docs[i] = _with_control_chars(rng, docs[i])
        extra: list[tuple[int, str]] = []  # (insert after index, doc): copies come after originals
        for _ in range(n_dup):
            i = rng.randrange(n_good)
            extra.append((i, docs[i]))
        for _ in range(n_ws):
            i = rng.randrange(n_good)
            extra.append((i, _with_whitespace_junk(rng, docs[i])))
        for _ in range(n_short):
            extra.append((rng.randrange(n_good), rng.choice(_SHORT_JUNK)))
        at: dict[int, list[str]] = {}
        for i, d in extra:
            at.setdefault(rng.randrange(i, n_good), []).append(d)
        merged: list[str] = []
        for i, d in enumerate(docs):
            merged.append(d)
            merged.extend(at.get(i, []))
        docs = merged
    return docs
