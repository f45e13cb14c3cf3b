"""Task families for SmolLM2-135M-Instruct, formatted with the model's chat template.

Every item is a user question with verifiable answers. The families are chosen so a 135M
instruct model partly solves them (greedy accuracy neither 0 nor 1, see docs/real_model.md):

============  ==========================================================  ===================
family        question (example)                                          verifier
============  ==========================================================  ===================
``letter``    What is the last letter of "lamp"?                          ``p`` (last letter)
``pick``      Which word in this list is an animal: chair, horse, cup?    the one animal
``arith``     What is 3 + 4?                                              last number ``7``
``plural``    What is the plural of "box"?  (copy with a change)          ``boxes``
``name``      Name an animal.  (open: many right answers)                 any listed animal
============  ==========================================================  ===================

Spelling short words backwards was tried first and dropped: the Q4_1 model answered 0 of 28
held-out words right greedily (it does not reverse letters at all); copying a list with one
word replaced also scored 0 of 36. The families above were measured before being kept.

A 135M chat model answers in sentences, so :func:`check` looks for the answer inside the
text (rules in its docstring). The open family ``name`` measures
diversity: :func:`distinct_valid` counts the distinct valid answers over samples.

Held-out families: :mod:`autodeco_samplers.models.smollm2.heldout_families` adds nine families
(eight closed, one open with 100 prompts) that no training record ever comes from
(:data:`HELDOUT_FAMILIES`); :func:`evaluation_items` is the evaluation set: the held-out part of
the trained families plus every item of the held-out families, each item marking
``heldout_family``.

Train / held-out split: each family's underlying content (the word, the list, the operand
pair, the category and phrasing) is split by a seeded permutation; held-out content never
appears in the training records. :func:`training_records` gives ``{"prompt", "completion"}``
records for ``autodeco train`` (prompt = the chat-formatted question ending with the
assistant header, completion = one right answer written as a short sentence in the model's own
style (``Item.target``, e.g. ``The last letter of "lamp" is "p".``); the trainer appends EOS
``<|im_end|>``).

>>> from autodeco_samplers.models.smollm2 import tasks
>>> item = tasks.heldout_items(2, families=["letter"])[0]
>>> tasks.check(item, item.answer)
True
>>> tasks.chat_prompt("Hi").endswith("<|im_start|>assistant\\n")
True
"""

from __future__ import annotations

import json
import random
import re
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

from autodeco_samplers.models.smollm2 import heldout_families

__all__ = [
    "FAMILIES", "HELDOUT_FAMILIES", "OPEN_FAMILIES", "evaluation_items", "SYSTEM_PROMPT", "Item", "chat_prompt", "normalize", "check",
    "all_items", "train_items", "heldout_items", "training_records", "distinct_valid", "summarize", "write_jsonl",
]

#: the default system line of SmolLM2's chat template (used when the messages have none)
SYSTEM_PROMPT = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
#: the families the heads train on (their held-out content is evaluated too)
FAMILIES: Tuple[str, ...] = ("letter", "pick", "arith", "plural", "name")
#: families held out whole: no training record comes from them
HELDOUT_FAMILIES: Tuple[str, ...] = heldout_families.HELDOUT_FAMILIES
OPEN_FAMILIES: Tuple[str, ...] = ("name",) + heldout_families.OPEN_HELDOUT_FAMILIES
#: seed of the train / held-out permutation (part of the task definition)
SPLIT_SEED = 17
HELDOUT_FRACTION = 0.3


def chat_prompt(question: str) -> str:
    """The prompt string SmolLM2's chat template makes for one user message plus the
    generation prompt: ChatML with the template's default system line. Equal to
    ``tokenizer.apply_chat_template([{"role": "user", "content": question}],
    add_generation_prompt=True, tokenize=False)`` (tested against the GGUF's template)."""
    return (
        f"<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>\n"
        f"<|im_start|>user\n{question}<|im_end|>\n"
        f"<|im_start|>assistant\n"
    )


@dataclass(frozen=True)
class Item:
    """One question: ``family``, ``key`` (its content id, unique in the family), the user
    ``question``, the chat-formatted ``prompt``, a reference ``answer``, the accepted answers
    ``valid`` (for open items, the whole valid set) and ``target``, the training completion
    (``{answer}`` in it stands for the answer, so open items can put any valid one there)."""

    family: str
    key: str
    question: str
    answer: str
    valid: Tuple[str, ...]
    target: str = "{answer}"
    open: bool = False

    def completion(self, answer: Optional[str] = None) -> str:
        """The training completion with ``answer`` (default: the reference answer)."""
        return self.target.replace("{answer}", self.answer if answer is None else answer)

    @property
    def prompt(self) -> str:
        return chat_prompt(self.question)

    @property
    def heldout_family(self) -> bool:
        """Whether the item's whole family is held out of training (:data:`HELDOUT_FAMILIES`)."""
        return self.family in HELDOUT_FAMILIES

    def to_json(self) -> Dict:
        d = asdict(self)
        d["valid"] = list(self.valid)
        d["prompt"] = self.prompt
        d["heldout_family"] = self.heldout_family
        return d


# ----------------------------------------------------------------------------- content

_WORDS = (
    "cat dog sun red cup hat pen box map car bus egg ice owl pig cow fox bat bed key "
    "arm leg eye ear sky sea day toy jam net fan bag rat ant bee web log hen "
    "book fish milk tree bird frog rain snow star moon door lamp desk ship road king "
    "ring lion bear wolf duck goat rose leaf corn cake salt gold farm hill lake wind "
    "apple house water bread green chair table train plant horse mouse smile stone "
    "cloud river sugar tiger zebra lemon melon piano robot candy"
).split()

_CATEGORIES: Dict[str, Tuple[str, ...]] = {
    "animal": ("horse", "tiger", "rabbit", "monkey", "sheep", "whale", "eagle", "snake", "mouse", "camel",
               "zebra", "panda", "donkey", "turtle", "parrot", "wolf", "bear", "lion", "fox", "deer"),
    "fruit": ("apple", "banana", "cherry", "grape", "lemon", "mango", "orange", "peach", "pear", "plum",
              "melon", "kiwi", "lime", "papaya", "apricot"),
    "color": ("red", "blue", "green", "yellow", "purple", "orange", "pink", "brown", "black", "white",
              "gray", "violet"),
    "vehicle": ("car", "bus", "train", "truck", "bicycle", "boat", "plane", "taxi", "tram", "ship"),
    "tool": ("hammer", "saw", "drill", "wrench", "shovel", "screwdriver", "axe", "chisel", "rake"),
}
_NEUTRAL = ("chair", "table", "cloud", "river", "book", "window", "pencil", "mountain", "shoe", "cup",
            "lamp", "door", "pillow", "stone", "candle", "carpet")

# open family: valid sets (lower case, singular); what the training targets draw from is the
# first part of each set, the rest still count as valid.
_OPEN_VALID: Dict[str, Tuple[str, ...]] = {
    "animal": _CATEGORIES["animal"] + (
        "cat", "dog", "cow", "pig", "goat", "duck", "chicken", "elephant", "giraffe", "kangaroo", "koala",
        "dolphin", "shark", "owl", "frog", "bee", "ant", "bird", "fish", "hamster", "squirrel", "otter",
        "penguin", "leopard", "cheetah", "gorilla", "hippo", "hippopotamus", "rhino", "rhinoceros", "crocodile",
        "alligator", "octopus", "bat", "rat", "hedgehog", "raccoon", "llama", "alpaca", "ox", "buffalo", "moose",
        "lizard", "butterfly", "spider", "seal", "swan", "goose", "crow", "pigeon", "jaguar", "puma", "lynx",
        "badger", "beaver", "mole", "hyena", "antelope", "bison", "yak", "ostrich", "flamingo", "peacock", "hawk",
        "falcon", "salmon", "tuna", "crab", "lobster", "snail", "worm", "chimpanzee", "orangutan", "sloth",
        "armadillo", "porcupine", "skunk", "weasel", "ferret", "walrus", "polar bear", "reindeer", "elk",
        "mule", "pony", "lamb", "calf", "puppy", "kitten", "dragonfly", "ladybug", "mosquito", "fly",
    ),
    "fruit": _CATEGORIES["fruit"] + (
        "strawberry", "blueberry", "raspberry", "blackberry", "watermelon", "pineapple", "coconut", "fig", "date",
        "pomegranate", "grapefruit", "tangerine", "nectarine", "guava", "lychee", "passion fruit", "avocado",
        "cranberry", "currant", "quince", "persimmon", "clementine", "mandarin", "dragon fruit", "banana",
    ),
    "color": _CATEGORIES["color"] + (
        "grey", "indigo", "cyan", "magenta", "turquoise", "beige", "gold", "silver", "maroon", "navy", "teal",
        "crimson", "scarlet", "lavender", "olive", "coral", "ivory", "lime", "aqua", "tan", "burgundy",
    ),
    "vegetable": ("carrot", "potato", "tomato", "onion", "broccoli", "cabbage", "lettuce", "spinach",
                  "pea", "bean", "corn", "cucumber", "pepper", "garlic", "celery", "pumpkin", "zucchini",
                  "eggplant", "beet", "radish", "cauliflower", "kale", "asparagus", "leek", "turnip",
                  "artichoke", "sweet potato", "squash", "okra", "mushroom", "parsnip", "yam"),
}
_OPEN_TRAIN_TARGETS = {c: v[:12] for c, v in _OPEN_VALID.items()}
_OPEN_PHRASINGS = (
    "Name {a} {c}.",
    "Name one {c}.",
    "Give an example of {a} {c}.",
    "Can you name {a} {c}?",
    "Tell me the name of {a} {c}.",
)

# copy with a change: regular, -es and irregular plurals
_PLURALS = tuple((w, w + "s") for w in (
    "dog cat book tree bird frog star door lamp desk ship road king ring lion bear duck goat rose "
    "cake hill lake apple house chair table train plant horse cloud river tiger zebra lemon piano robot "
    "pen cup hat car egg pig cow bed key arm leg eye ear"
).split()) + tuple((w, w + "es") for w in "box fox bus dish glass watch church brush kiss tomato potato".split()) + (
    ("mouse", "mice"), ("child", "children"), ("man", "men"), ("woman", "women"), ("foot", "feet"),
    ("tooth", "teeth"), ("goose", "geese"), ("person", "people"), ("leaf", "leaves"), ("knife", "knives"),
    ("wolf", "wolves"), ("baby", "babies"), ("city", "cities"), ("party", "parties"), ("story", "stories"),
    ("sheep", "sheep"), ("fish", "fish"), ("deer", "deer"), ("ox", "oxen"), ("wife", "wives"),
)


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _letter_items() -> List[Item]:
    out = []
    for w in _WORDS:
        for which, letter in (("first", w[0]), ("last", w[-1])):
            q = f'What is the {which} letter of "{w}"?'
            t = f'The {which} letter of "{w}" is "{{answer}}".'
            out.append(Item("letter", f"{which}:{w}", q, letter, (letter,), target=t))
    return out


def _plural_items() -> List[Item]:
    out = []
    for w, pl in _PLURALS:
        q = f'What is the plural of "{w}"?'
        out.append(Item("plural", w, q, pl, (pl,), target=f'The plural of "{w}" is "{{answer}}".'))
    return out


def _pick_items() -> List[Item]:
    rng = random.Random(1)
    out = []
    for cat, members in _CATEGORIES.items():
        for target in members:
            others = [w for c, ws in _CATEGORIES.items() if c != cat for w in ws] + list(_NEUTRAL)
            distract = rng.sample([w for w in others if w not in members], 2)
            words = distract + [target]
            rng.shuffle(words)
            q = f"Which word in this list is {_article(cat)} {cat}: {', '.join(words)}?"
            t = f'The word "{{answer}}" is {_article(cat)} {cat}.'
            out.append(Item("pick", f"{cat}:{','.join(words)}", q, target, (target,), target=t))
    return out


def _arith_items() -> List[Item]:
    out = []
    for a in range(1, 10):
        for b in range(1, 10):
            q = f"What is {a} + {b}?"
            out.append(Item("arith", f"{a}+{b}", q, str(a + b), (str(a + b),), target=f"{a} + {b} = {{answer}}."))
            if a > b:
                q = f"What is {a} - {b}?"
                out.append(Item("arith", f"{a}-{b}", q, str(a - b), (str(a - b),), target=f"{a} - {b} = {{answer}}."))
    return out


def _name_items() -> List[Item]:
    out = []
    for cat, valid in _OPEN_VALID.items():
        for k, ph in enumerate(_OPEN_PHRASINGS):
            q = ph.format(a=_article(cat), c=cat)
            t = f"One {cat} is the {{answer}}." if cat != "color" else "One color is {answer}."
            out.append(Item("name", f"{cat}:{k}", q, valid[0], tuple(sorted(set(valid))), target=t, open=True))
    return out


def _make(family: str, key: str, question: str, answer: str, valid: Sequence[str], open: bool = False) -> Item:
    return Item(family, key, question, answer, tuple(valid), open=open)


_BUILDERS = {"letter": _letter_items, "pick": _pick_items, "arith": _arith_items, "plural": _plural_items, "name": _name_items,
             **{f: (lambda b=b: b(_make)) for f, b in heldout_families.BUILDERS.items()}}


def all_items(family: str) -> List[Item]:
    """Every item of one family (trained or held out), in a fixed order."""
    if family not in _BUILDERS:
        raise ValueError(f"unknown task family {family!r}; choose from {', '.join(FAMILIES + HELDOUT_FAMILIES)}")
    return _BUILDERS[family]()


def _split(family: str) -> Tuple[List[Item], List[Item]]:
    """``(train, held out)`` of a family: a held-out family is all held out."""
    items = all_items(family)
    if family in HELDOUT_FAMILIES:
        return [], items
    order = list(range(len(items)))
    random.Random(f"{SPLIT_SEED}:{family}").shuffle(order)
    n_held = max(1, round(HELDOUT_FRACTION * len(items)))
    held = sorted(order[:n_held])
    train = sorted(order[n_held:])
    return [items[i] for i in train], [items[i] for i in held]


def train_items(families: Optional[Sequence[str]] = None) -> List[Item]:
    """The training split of the given families (all by default)."""
    return [it for f in (families or FAMILIES) for it in _split(f)[0]]


def heldout_items(n_per_family: Optional[int] = None, families: Optional[Sequence[str]] = None) -> List[Item]:
    """The held-out split: the first ``n_per_family`` items of each family's held-out part
    (all when None), families in :data:`FAMILIES` order."""
    out: List[Item] = []
    for f in families or FAMILIES:
        held = _split(f)[1]
        out += held if n_per_family is None else held[:n_per_family]
    return out


def evaluation_items(per_family: Optional[int] = None, open_per_family: Optional[int] = None) -> List[Item]:
    """The evaluation set: the held-out content of the trained families, then every item of
    the held-out families (:data:`HELDOUT_FAMILIES`); at most ``per_family`` items of each
    closed family and ``open_per_family`` of each open one (None: all), taken in a fixed
    shuffled order so a small set still spans the family."""
    out: List[Item] = []
    for f in FAMILIES + HELDOUT_FAMILIES:
        held = _split(f)[1]
        order = list(range(len(held)))
        random.Random(f"eval:{f}").shuffle(order)
        n = open_per_family if f in OPEN_FAMILIES else per_family
        out += [held[i] for i in sorted(order[:n] if n is not None else order)]
    return out


def training_records(n: int, seed: int = 0, families: Optional[Sequence[str]] = None) -> List[Dict[str, str]]:
    """``n`` ``{"prompt", "completion"}`` records drawn from the training split, families in
    equal shares (round robin), items uniformly within a family. The open family's completion
    is a uniformly drawn answer from the first dozen of its category's valid set, so the
    training data itself is diverse where the task is open."""
    rng = random.Random(seed)
    fams = list(families or FAMILIES)
    pools = {f: _split(f)[0] for f in fams}
    out = []
    for i in range(n):
        f = fams[i % len(fams)]
        item = rng.choice(pools[f])
        if item.open:
            completion = item.completion(rng.choice(_OPEN_TRAIN_TARGETS[item.key.split(":")[0]]))
        else:
            completion = item.completion()
        out.append({"prompt": item.prompt, "completion": completion, "family": f})
    return out


# ----------------------------------------------------------------------------- scoring

_QUOTES = "\"'`“”‘’«»*"


def normalize(text: str, *, keep_case: bool = False) -> str:
    """Strip whitespace, quotes, markdown stars and final punctuation; lower-case unless
    ``keep_case``; collapse inner whitespace."""
    t = text.strip().strip(_QUOTES).strip()
    t = t.rstrip(".!").strip().strip(_QUOTES).strip()
    t = re.sub(r"\s+", " ", t)
    return t if keep_case else t.lower()


def _contains_phrase(text: str, phrase: str) -> bool:
    """``phrase`` (one or more words) occurs in ``text`` on word boundaries, any case."""
    return re.search(r"(?<![a-z])" + re.escape(phrase.lower()) + r"(?![a-z])", text.lower()) is not None


def _open_matches(item: Item, text: str) -> List[str]:
    """Valid answers named in ``text`` (plural forms count), in order of appearance; the
    category word itself (``animal``) never counts."""
    cat = item.key.split(":")[0]
    found: List[Tuple[int, str]] = []
    low = text.lower()
    for v in item.valid:
        if v == cat:
            continue
        for form in (v, v + "s", v + "es"):
            m = re.search(r"(?<![a-z])" + re.escape(form) + r"(?![a-z])", low)
            if m:
                found.append((m.start(), v))
                break
    return [v for _, v in sorted(found)]


def _check_letter(item: Item, text: str) -> bool:
    letters = re.findall(r"(?<![A-Za-z'])([A-Za-z])(?![A-Za-z'])", text)
    quoted = re.findall(r"[\"'“‘]([A-Za-z])[\"'”’]", text)
    bare = normalize(text)
    pool = quoted or ([bare] if len(bare) == 1 else [c for c in letters if c.lower() not in ("a", "i")])
    return bool(pool) and pool[-1].lower() == item.answer


def check(item: Item, text: str) -> bool:
    """Whether a completion (EOS removed) answers ``item`` correctly.

    A 135M chat model answers in sentences ("The word "tram" is a vehicle."), so the rules
    look for the answer in the text rather than demand it alone:

    * ``letter``: the last single letter in the text (quoted or standing alone; the article
      "a" and "i" only when quoted or alone) is the answer, any case;
    * ``pick``: the right word occurs and none of the other listed words does;
    * ``arith``: the last number in the text is the result;
    * ``plural``: the plural occurs as a whole word and, unless it equals the singular, the
      text does not name the singular alone after "is";
    * ``name`` (open): the first valid answer named is the answer; valid if there is one.

    The held-out families' rules are in :mod:`~autodeco_samplers.models.smollm2.heldout_families`
    (``neighbor`` uses ``letter``'s rule, ``name_new`` the open rule).
    """
    if item.family == "arith":
        nums = re.findall(r"-?\d+", text)
        return bool(nums) and nums[-1] == item.answer
    if item.family in ("letter", "neighbor"):
        return _check_letter(item, text)
    if item.family in heldout_families.CHECKS:
        return heldout_families.CHECKS[item.family](item, text)
    if item.family == "pick":
        options = item.key.split(":", 1)[1].split(",")
        return _contains_phrase(text, item.answer) and not any(
            _contains_phrase(text, o) for o in options if o != item.answer)
    if item.family == "plural":
        return heldout_families.check_changed_form(item, text)
    if item.open:
        return bool(_open_matches(item, text))
    return normalize(text) in item.valid


def canonical_open_answer(item: Item, text: str) -> Optional[str]:
    """The valid answer a completion names first (singular, lower case), or None."""
    found = _open_matches(item, text)
    return found[0] if found else None


def distinct_valid(item: Item, texts: Iterable[str]) -> int:
    """Number of distinct valid answers among ``texts`` (samples for one open item)."""
    return len({c for t in texts if (c := canonical_open_answer(item, t)) is not None})


def summarize(items: Sequence[Item], texts: Sequence[str]) -> Dict[str, Dict[str, float]]:
    """Per family: ``n``, ``accuracy`` and, for open families, ``distinct_valid`` (summed over
    items of the distinct valid answers; several samples per item give several texts: pass the
    item once per text)."""
    if len(items) != len(texts):
        raise ValueError(f"{len(items)} items but {len(texts)} texts")
    per: Dict[str, List[bool]] = defaultdict(list)
    answers: Dict[Tuple[str, str], set] = defaultdict(set)
    for it, t in zip(items, texts):
        per[it.family].append(check(it, t))
        if it.open and (c := canonical_open_answer(it, t)) is not None:
            answers[(it.family, it.key)].add(c)
    out: Dict[str, Dict[str, float]] = {}
    for f, oks in per.items():
        out[f] = {"n": len(oks), "accuracy": sum(oks) / len(oks)}
        if f in OPEN_FAMILIES:
            out[f]["distinct_valid"] = sum(len(v) for (fam, _), v in answers.items() if fam == f)
    return out


def write_jsonl(records: Iterable[Dict], path: Union[str, Path]) -> Path:
    """Write records one JSON object per line (``autodeco train --data``)."""
    path = Path(path)
    with path.open("w", encoding="utf-8") as fh:
        for r in records:
            fh.write(json.dumps(r) + "\n")
    return path
