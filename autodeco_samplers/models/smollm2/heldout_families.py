"""Task families the shipped SmolLM2 heads never train on (the *held-out families*).

:mod:`autodeco_samplers.models.smollm2.tasks` trains the heads on five families and holds out
30 % of each family's content; the families here are held out whole, so an evaluation can ask
whether the heads help on kinds of questions they have never seen (docs/evaluation.md). Every
item is asked through the model's chat template (:func:`tasks.chat_prompt`).

=============  ====================================================  =============================
family         question (example)                                    right answer
=============  ====================================================  =============================
``succ``       What is the next number after 41?                     ``42`` (the last number named,
                                                                     digits or a word)
``compare``    Which is greater: 7 or 3?                             ``7`` (the first number named)
``mult``       What is 3 times 4?                                    ``12`` (the last number)
``neighbor``   What is the next letter after "c" in the alphabet?    ``d`` (the letter rule of
                                                                     ``letter``)
``category``   Is "horse" an animal or a fruit?                      ``animal`` named, ``fruit`` not
``opposite``   What is the opposite of "hot"?                        ``cold`` (one of a valid set)
``capital``    What is the capital of France?                        ``Paris``
``past``       What is the past tense of "walk"?                     ``walked``
``name_new``   Name a sport.  (open: categories ``name`` never has)  any listed sport
=============  ====================================================  =============================

The open family ``name_new`` asks for members of ten categories in ten phrasings (100
prompts) and is scored like ``name``: distinct valid answers over samples.
"""

from __future__ import annotations

import random
import re
from typing import Callable, Dict, List, Tuple

__all__ = ["HELDOUT_FAMILIES", "OPEN_HELDOUT_FAMILIES", "BUILDERS", "CHECKS", "OPEN_VALID", "numbers", "check_changed_form"]

HELDOUT_FAMILIES: Tuple[str, ...] = ("succ", "compare", "mult", "neighbor", "category", "opposite", "capital",
                                     "past", "name_new")
OPEN_HELDOUT_FAMILIES: Tuple[str, ...] = ("name_new",)

_NUMBER_WORDS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty".split())}


def numbers(text: str) -> List[str]:
    """The numbers a text names, in order: digit runs (``-?\\d+``) and the number words zero
    to twenty (whole words, any case), each as its decimal string."""
    out = []
    for m in re.finditer(r"-?\d+|[A-Za-z]+", text):
        tok = m.group(0)
        if tok[0].isdigit() or tok[0] == "-":
            out.append(str(int(tok)))
        elif tok.lower() in _NUMBER_WORDS:
            out.append(str(_NUMBER_WORDS[tok.lower()]))
    return out


# ----------------------------------------------------------------------------- content

_OPPOSITES = (
    ("hot", ("cold", "cool")), ("big", ("small", "little", "tiny")), ("tall", ("short",)), ("fast", ("slow",)),
    ("happy", ("sad", "unhappy")), ("light", ("dark", "heavy")), ("open", ("closed", "shut")), ("up", ("down",)),
    ("hard", ("soft", "easy")), ("old", ("new", "young")), ("rich", ("poor",)), ("full", ("empty",)),
    ("wet", ("dry",)), ("day", ("night",)), ("good", ("bad", "evil")), ("early", ("late",)), ("win", ("lose",)),
    ("love", ("hate",)), ("long", ("short",)), ("thick", ("thin",)), ("loud", ("quiet", "soft", "silent")),
    ("clean", ("dirty",)), ("strong", ("weak",)), ("high", ("low",)), ("push", ("pull",)), ("buy", ("sell",)),
    ("begin", ("end", "finish")), ("inside", ("outside",)), ("above", ("below", "beneath", "under")),
    ("true", ("false",)), ("left", ("right",)), ("north", ("south",)), ("east", ("west",)), ("near", ("far",)),
    ("first", ("last",)), ("always", ("never",)), ("friend", ("enemy", "foe")), ("give", ("take", "receive")),
    ("question", ("answer",)), ("safe", ("dangerous", "unsafe")), ("sweet", ("sour", "bitter", "salty")),
    ("wide", ("narrow",)), ("heavy", ("light",)), ("cheap", ("expensive", "costly", "dear")),
    ("alive", ("dead",)), ("smooth", ("rough",)), ("noisy", ("quiet", "silent")), ("awake", ("asleep",)),
    ("brave", ("cowardly", "afraid", "scared", "fearful")), ("polite", ("rude", "impolite")),
    ("arrive", ("leave", "depart")), ("remember", ("forget",)), ("accept", ("reject", "refuse", "decline")),
    ("laugh", ("cry",)), ("black", ("white",)), ("young", ("old",)), ("cold", ("hot", "warm")),
    ("small", ("big", "large")), ("sad", ("happy", "glad")), ("slow", ("fast", "quick")),
)

_CAPITALS = (
    ("France", "Paris"), ("Germany", "Berlin"), ("Italy", "Rome"), ("Spain", "Madrid"), ("Japan", "Tokyo"),
    ("China", "Beijing"), ("Russia", "Moscow"), ("England", "London"), ("the United Kingdom", "London"),
    ("Egypt", "Cairo"), ("Greece", "Athens"), ("Portugal", "Lisbon"), ("Ireland", "Dublin"), ("Austria", "Vienna"),
    ("Norway", "Oslo"), ("Sweden", "Stockholm"), ("Denmark", "Copenhagen"), ("Finland", "Helsinki"),
    ("Poland", "Warsaw"), ("Hungary", "Budapest"), ("Belgium", "Brussels"), ("the Netherlands", "Amsterdam"),
    ("Canada", "Ottawa"), ("Mexico", "Mexico City"), ("Argentina", "Buenos Aires"), ("Peru", "Lima"),
    ("Chile", "Santiago"), ("Colombia", "Bogota"), ("India", "New Delhi"), ("South Korea", "Seoul"),
    ("Thailand", "Bangkok"), ("Vietnam", "Hanoi"), ("Indonesia", "Jakarta"), ("the Philippines", "Manila"),
    ("Kenya", "Nairobi"), ("Turkey", "Ankara"), ("Iran", "Tehran"), ("Iraq", "Baghdad"), ("Cuba", "Havana"),
    ("Australia", "Canberra"), ("the United States", "Washington"), ("Switzerland", "Bern"),
    ("Czechia", "Prague"), ("Ukraine", "Kyiv"), ("Scotland", "Edinburgh"), ("Wales", "Cardiff"),
)

_PAST = tuple((v, v + "ed") for v in (
    "walk jump play talk cook clean open watch help call look ask work paint climb kick pull push fill "
    "wash visit answer start finish rain"
).split()) + tuple((v, v + "d") for v in "dance like smile move love live close bake share use".split()) + (
    ("stop", "stopped"), ("plan", "planned"), ("drop", "dropped"), ("carry", "carried"), ("cry", "cried"),
    ("try", "tried"), ("study", "studied"), ("go", "went"), ("eat", "ate"), ("see", "saw"), ("run", "ran"),
    ("swim", "swam"), ("sing", "sang"), ("drink", "drank"), ("write", "wrote"), ("drive", "drove"),
    ("ride", "rode"), ("take", "took"), ("give", "gave"), ("make", "made"), ("come", "came"), ("know", "knew"),
    ("grow", "grew"), ("fly", "flew"), ("throw", "threw"), ("speak", "spoke"), ("break", "broke"),
    ("buy", "bought"), ("bring", "brought"), ("think", "thought"), ("teach", "taught"), ("catch", "caught"),
    ("sleep", "slept"), ("keep", "kept"), ("feel", "felt"), ("leave", "left"), ("find", "found"),
    ("tell", "told"), ("sell", "sold"), ("sit", "sat"), ("stand", "stood"), ("win", "won"), ("begin", "began"),
    ("fall", "fell"), ("hold", "held"), ("read", "read"), ("put", "put"), ("cut", "cut"), ("hit", "hit"),
    ("get", "got"), ("say", "said"), ("pay", "paid"), ("meet", "met"), ("send", "sent"), ("build", "built"),
    ("lose", "lost"), ("forget", "forgot"), ("wake", "woke"), ("wear", "wore"), ("draw", "drew"),
)

_CATEGORY_MEMBERS: Dict[str, Tuple[str, ...]] = {
    "animal": ("horse", "tiger", "rabbit", "monkey", "sheep", "whale", "eagle", "snake", "camel", "zebra",
               "panda", "donkey", "turtle", "parrot", "wolf", "bear", "lion", "deer", "elephant", "giraffe"),
    "fruit": ("apple", "banana", "cherry", "grape", "lemon", "mango", "orange", "peach", "pear", "plum",
              "kiwi", "papaya", "apricot", "strawberry", "pineapple"),
    "vehicle": ("car", "bus", "train", "truck", "bicycle", "boat", "plane", "taxi", "tram", "ship",
                "motorcycle", "helicopter", "scooter", "van"),
    "tool": ("hammer", "saw", "drill", "wrench", "shovel", "screwdriver", "axe", "chisel", "rake", "pliers"),
    "color": ("red", "blue", "green", "yellow", "purple", "pink", "brown", "black", "white", "gray"),
    "country": ("France", "Japan", "Brazil", "Canada", "Egypt", "India", "Mexico", "Italy", "Kenya", "Norway"),
}

_NEW_OPEN: Dict[str, Tuple[str, ...]] = {
    "sport": ("soccer", "football", "basketball", "tennis", "baseball", "golf", "hockey", "cricket", "rugby",
              "volleyball", "swimming", "running", "boxing", "cycling", "skiing", "surfing", "badminton",
              "table tennis", "ping pong", "wrestling", "gymnastics", "karate", "judo", "fencing", "rowing",
              "sailing", "archery", "bowling", "skating", "snowboarding", "lacrosse", "handball", "polo",
              "softball", "squash", "climbing", "diving", "marathon", "triathlon", "track"),
    "country": ("france", "germany", "italy", "spain", "japan", "china", "russia", "england", "egypt", "greece",
                "portugal", "ireland", "austria", "norway", "sweden", "denmark", "finland", "poland", "canada",
                "mexico", "brazil", "argentina", "peru", "chile", "india", "korea", "thailand", "vietnam",
                "indonesia", "kenya", "nigeria", "turkey", "iran", "australia", "new zealand", "usa",
                "united states", "america", "united kingdom", "switzerland", "belgium", "netherlands",
                "cuba", "morocco", "ghana", "ethiopia", "pakistan", "scotland", "wales", "iceland"),
    "musical instrument": ("piano", "guitar", "violin", "drum", "drums", "flute", "trumpet", "cello",
                           "saxophone", "clarinet", "harp", "trombone", "tuba", "banjo", "ukulele", "harmonica",
                           "accordion", "organ", "oboe", "bass", "xylophone", "viola", "bagpipes", "keyboard",
                           "mandolin", "tambourine", "triangle", "synthesizer", "bassoon", "horn"),
    "body part": ("head", "hand", "arm", "leg", "foot", "eye", "ear", "nose", "mouth", "finger", "toe", "knee",
                  "elbow", "shoulder", "neck", "heart", "brain", "stomach", "lung", "liver", "back", "chest",
                  "hair", "tooth", "teeth", "tongue", "lip", "chin", "cheek", "skin", "wrist", "ankle", "hip",
                  "thumb", "face", "kidney", "bone", "muscle"),
    "job": ("doctor", "teacher", "nurse", "engineer", "lawyer", "pilot", "farmer", "chef", "cook", "police officer",
            "firefighter", "scientist", "artist", "writer", "baker", "dentist", "plumber", "electrician",
            "carpenter", "mechanic", "driver", "soldier", "judge", "architect", "programmer", "accountant",
            "musician", "singer", "actor", "painter", "waiter", "cashier", "librarian", "journalist",
            "photographer", "designer", "veterinarian", "pharmacist", "banker", "manager", "salesperson",
            "gardener", "tailor", "astronaut", "professor", "student"),
    "drink": ("water", "milk", "juice", "tea", "coffee", "soda", "lemonade", "beer", "wine", "cola",
              "orange juice", "apple juice", "hot chocolate", "cocoa", "smoothie", "milkshake", "whiskey",
              "vodka", "champagne", "cider", "iced tea", "espresso", "latte", "cappuccino", "kombucha",
              "coconut water", "sparkling water", "rum", "gin", "punch"),
    "flower": ("rose", "tulip", "daisy", "sunflower", "lily", "orchid", "daffodil", "lavender", "violet",
               "poppy", "carnation", "jasmine", "lotus", "marigold", "iris", "peony", "hibiscus", "dandelion",
               "chrysanthemum", "magnolia", "lilac", "begonia", "geranium", "petunia", "azalea", "camellia",
               "crocus", "hyacinth", "zinnia", "cherry blossom", "bluebell", "buttercup", "gardenia"),
    "bird": ("eagle", "sparrow", "robin", "pigeon", "crow", "owl", "parrot", "penguin", "ostrich", "flamingo",
             "peacock", "hawk", "falcon", "swan", "duck", "goose", "chicken", "turkey", "hummingbird",
             "woodpecker", "seagull", "gull", "pelican", "stork", "heron", "raven", "magpie", "canary",
             "cardinal", "bluebird", "blue jay", "finch", "vulture", "kingfisher", "toucan", "dove",
             "albatross", "crane", "kiwi", "emu", "starling", "wren", "swallow"),
    "piece of clothing": ("shirt", "t-shirt", "pants", "trousers", "jeans", "dress", "skirt", "jacket", "coat",
                          "sweater", "hat", "cap", "scarf", "gloves", "socks", "shoes", "boots", "shorts",
                          "hoodie", "blouse", "suit", "tie", "vest", "belt", "pajamas", "sandals",
                          "sneakers", "uniform", "cardigan", "raincoat", "gown", "jumper", "leggings"),
    "piece of furniture": ("chair", "table", "sofa", "couch", "bed", "desk", "bookshelf", "shelf", "cabinet",
                           "wardrobe", "dresser", "stool", "bench", "armchair", "ottoman", "cupboard",
                           "nightstand", "drawer", "recliner", "futon", "crib", "bookcase", "sideboard",
                           "lamp", "mirror", "rocking chair", "coffee table", "dining table", "closet"),
}
#: valid answers of the open held-out family, per category (lower case)
OPEN_VALID: Dict[str, Tuple[str, ...]] = {c: tuple(sorted(set(v))) for c, v in _NEW_OPEN.items()}
_OPEN_PHRASINGS = (
    "Name {a} {c}.", "Name one {c}.", "Give an example of {a} {c}.", "Can you name {a} {c}?",
    "Tell me the name of {a} {c}.", "Say the name of {a} {c}.", "Name any {c}.", "Think of {a} {c} and name it.",
    "What is an example of {a} {c}?", "Name {a} {c}, please.",
)


def _article(word: str) -> str:
    return "an" if word[0].lower() in "aeiou" else "a"


def _succ_items(make) -> list:
    return [make("succ", str(n), f"What is the next number after {n}?", str(n + 1), (str(n + 1),)) for n in range(1, 151)]


def _compare_items(make) -> list:
    rng = random.Random(23)
    pairs = [(a, b) for a in range(1, 21) for b in range(1, 21) if a != b]
    out = []
    for which, pick in (("greater", max), ("smaller", min)):
        for a, b in rng.sample(pairs, 130):
            out.append(make("compare", f"{which}:{a},{b}", f"Which is {which}: {a} or {b}?", str(pick(a, b)),
                            (str(pick(a, b)),)))
    return out


def _mult_items(make) -> list:
    return [make("mult", f"{a}x{b}", f"What is {a} times {b}?", str(a * b), (str(a * b),))
            for a in range(2, 10) for b in range(2, 10)]


def _neighbor_items(make) -> list:
    abc = "abcdefghijklmnopqrstuvwxyz"
    out = []
    for i, c in enumerate(abc):
        if i + 1 < len(abc):
            out.append(make("neighbor", f"after:{c}", f'What is the next letter after "{c}" in the alphabet?', abc[i + 1],
                            (abc[i + 1],)))
        if i > 0:
            out.append(make("neighbor", f"before:{c}", f'What is the letter before "{c}" in the alphabet?', abc[i - 1],
                            (abc[i - 1],)))
    return out


def _category_items(make) -> list:
    rng = random.Random(29)
    cats = list(_CATEGORY_MEMBERS)
    out = []
    for cat, members in _CATEGORY_MEMBERS.items():
        for w in members:
            for other in rng.sample([c for c in cats if c != cat], 2):
                first, second = (cat, other) if rng.random() < 0.5 else (other, cat)
                q = f'Is "{w}" {_article(first)} {first} or {_article(second)} {second}?'
                out.append(make("category", f"{w}:{other}", q, cat, (cat,)))
    return out


def _opposite_items(make) -> list:
    return [make("opposite", w, f'What is the opposite of "{w}"?', valid[0], valid) for w, valid in _OPPOSITES]


def _capital_items(make) -> list:
    return [make("capital", country, f"What is the capital of {country}?", city, (city,)) for country, city in _CAPITALS]


def _past_items(make) -> list:
    return [make("past", v, f'What is the past tense of "{v}"?', p, (p,)) for v, p in _PAST]


def _name_new_items(make) -> list:
    return [make("name_new", f"{cat}:{k}", ph.format(a=_article(cat), c=cat), valid[0], valid, open=True)
            for cat, valid in OPEN_VALID.items() for k, ph in enumerate(_OPEN_PHRASINGS)]


#: family -> builder(make) where ``make(family, key, question, answer, valid, open=False)`` makes an item
BUILDERS: Dict[str, Callable] = {"succ": _succ_items, "compare": _compare_items, "mult": _mult_items,
                                 "neighbor": _neighbor_items, "category": _category_items,
                                 "opposite": _opposite_items, "capital": _capital_items, "past": _past_items,
                                 "name_new": _name_new_items}


# ----------------------------------------------------------------------------- checks


def _has(text: str, phrase: str) -> bool:
    return re.search(r"(?<![a-z])" + re.escape(phrase.lower()) + r"(?![a-z])", text.lower()) is not None


def _check_last_number(item, text: str) -> bool:
    nums = numbers(text)
    return bool(nums) and nums[-1] == item.answer


def _check_compare(item, text: str) -> bool:
    nums = numbers(text)
    return bool(nums) and nums[0] == item.answer


def _check_category(item, text: str) -> bool:
    other = item.key.split(":", 1)[1]
    return _has(text, item.answer) and not _has(text, other)


def _check_any_valid(item, text: str) -> bool:
    return any(_has(text, v) for v in item.valid)


def check_changed_form(item, text: str) -> bool:
    """A word changed into another form (``plural``: the plural of ``item.key``; ``past``: its
    past tense): the form ``item.answer`` occurs as a whole word and, unless it equals the word
    itself, the text does not end by naming the unchanged word after "is"."""
    return _has(text, item.answer) and (
        item.answer == item.key or not re.search(r"\bis\s+[\"'“]?" + re.escape(item.key) + r"[\"'”]?[.\s]*$", text.lower()))


#: family -> check(item, text) for the closed held-out families (``neighbor`` uses ``letter``'s rule in
#: :func:`tasks.check`, ``name_new`` the open rule)
CHECKS: Dict[str, Callable[[object, str], bool]] = {
    "succ": _check_last_number, "mult": _check_last_number, "compare": _check_compare, "category": _check_category,
    "opposite": _check_any_valid, "capital": _check_any_valid, "past": check_changed_form,
}

