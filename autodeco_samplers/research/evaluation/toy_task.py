"""The choice-then-derive task: where the right amount of randomness changes inside one answer.

Each prompt lists ``k`` words and asks for one of them spelled backwards::

    prompt:      "pick one of red fox blue and spell it backwards:"
    completion:  " fox -> x o f"

The first completion token is a *free choice*: every listed word is correct, and the
training data picks them uniformly, so a good sampler should keep that choice diverse.
Everything after ``->`` is *determined* by the choice: one right string, so a good sampler
should be as precise as greedy decoding there. A static temperature has to trade one for the
other; a per-token temperature/top-p need not.

Held-out evaluation: the word *sets* are split by a seeded permutation; sets used for
evaluation never appear (in any order) in the training data.

Scoring rules (:func:`score_completion`, :func:`summarize`):

* parse ``"<choice> -> <letters>"`` (surrounding whitespace ignored, EOS already removed);
* ``valid_choice``: the choice is one of the prompt's words;
* ``correct``: valid choice *and* the letters equal the choice reversed, separated by one
  space (exact string match);
* ``accuracy``: fraction of correct samples (the strict end-to-end measure);
* ``derive_accuracy``: correct samples among those with a valid choice (the determined part
  alone; 0 when no choice was valid);
* ``diversity``: for each prompt, the Shannon entropy of the empirical distribution of its
  valid choices divided by ``log k`` (1 = uniform over the ``k`` words, 0 = always the same
  word or never a valid one), averaged over prompts;
* ``score``: ``accuracy * diversity`` (both must be high; 0 if either collapses).
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from dataclasses import asdict, dataclass
from itertools import combinations
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

__all__ = [
    "TaskSpec",
    "DEFAULT_WORDS",
    "make_prompt",
    "make_completion",
    "derive",
    "split_sets",
    "training_records",
    "eval_prompts",
    "score_completion",
    "summarize",
    "expected_uniform_diversity",
    "tokenizer_corpus",
    "write_jsonl",
]

DEFAULT_WORDS: Tuple[str, ...] = (
    "purple", "orange", "yellow", "silver", "violet", "maroon",
    "rabbit", "turtle", "parrot", "donkey", "badger", "falcon",
)

_PARSE = re.compile(r"^\s*(\S+)\s*->\s*(.*?)\s*$", re.S)


@dataclass(frozen=True)
class TaskSpec:
    """The task's parameters (saved beside the default model as ``task.json``)."""

    words: Tuple[str, ...] = DEFAULT_WORDS
    k: int = 3
    heldout_fraction: float = 0.2
    seed: int = 0

    def to_json(self) -> Dict:
        d = asdict(self)
        d["words"] = list(self.words)
        return d

    @classmethod
    def from_json(cls, d: Dict) -> "TaskSpec":
        return cls(words=tuple(d["words"]), k=int(d["k"]), heldout_fraction=float(d["heldout_fraction"]), seed=int(d["seed"]))

    def __post_init__(self) -> None:
        if self.k < 2 or self.k > len(self.words):
            raise ValueError(f"k must lie in [2, {len(self.words)}], got {self.k}")
        if len(set(self.words)) != len(self.words) or not all(w.isalpha() and w.islower() for w in self.words):
            raise ValueError("words must be distinct lowercase letters-only strings")


def derive(word: str) -> str:
    """The determined part for ``word``: its letters reversed, separated by single spaces."""
    return " ".join(reversed(word))


def make_prompt(options: Sequence[str]) -> str:
    return f"pick one of {' '.join(options)} and spell it backwards:"


def make_completion(choice: str) -> str:
    return f" {choice} -> {derive(choice)}"


def split_sets(spec: TaskSpec) -> Tuple[List[Tuple[str, ...]], List[Tuple[str, ...]]]:
    """``(train_sets, heldout_sets)``: all ``k``-subsets of the words, split by a seeded shuffle."""
    sets = list(combinations(spec.words, spec.k))
    rng = np.random.default_rng(spec.seed)
    order = rng.permutation(len(sets))
    n_held = max(1, int(round(spec.heldout_fraction * len(sets))))
    held = sorted(sets[i] for i in order[:n_held])
    train = sorted(sets[i] for i in order[n_held:])
    return train, held


def training_records(spec: TaskSpec, n: int, *, seed: int = 1) -> List[Dict[str, str]]:
    """``n`` prompt/completion records from the training sets: a random set, a random
    order of its words, and a uniformly random choice among them."""
    train, _ = split_sets(spec)
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        s = list(train[rng.integers(len(train))])
        rng.shuffle(s)
        choice = s[rng.integers(len(s))]
        out.append({"prompt": make_prompt(s), "completion": make_completion(choice)})
    return out


def eval_prompts(spec: TaskSpec, n_prompts: Optional[int] = None, *, seed: int = 2,
                 split: str = "heldout") -> List[Tuple[str, Tuple[str, ...]]]:
    """``(prompt, options)`` pairs, one seeded word order per set.

    ``split="heldout"`` (the evaluation): every held-out set, in sorted order. ``split="train"``
    (for choosing settings without looking at the held-out sets): as many training sets as
    there are held-out sets, drawn without replacement by a generator seeded with ``seed``.
    """
    train, held = split_sets(spec)
    rng = np.random.default_rng(seed)
    if split == "heldout":
        sets = held
    elif split == "train":
        sets = [train[i] for i in sorted(rng.choice(len(train), size=min(len(held), len(train)), replace=False))]
    else:
        raise ValueError(f"split must be 'heldout' or 'train', got {split!r}")
    out = []
    for s in sets:
        s = list(s)
        rng.shuffle(s)
        out.append((make_prompt(s), tuple(s)))
    return out if n_prompts is None else out[:n_prompts]


def tokenizer_corpus(spec: TaskSpec) -> str:
    """Text to train the task's tokenizer on: every prompt word and completion shape."""
    parts = [make_prompt(spec.words[i:i + spec.k]) for i in range(len(spec.words))]
    parts += [make_completion(w) for w in spec.words] * 3
    letters = " " + " ".join("abcdefghijklmnopqrstuvwxyz")
    return " ".join(parts) + " " + " ".join(spec.words) + letters * 6


@dataclass(frozen=True)
class Scored:
    choice: Optional[str]
    valid_choice: bool
    correct: bool


def score_completion(text: str, options: Sequence[str]) -> Scored:
    """Parse and score one completion (module docstring rule)."""
    m = _PARSE.match(text)
    if not m:
        return Scored(None, False, False)
    choice, letters = m.group(1), m.group(2)
    valid = choice in options
    return Scored(choice, valid, bool(valid and letters == derive(choice)))


def normalized_entropy(counts: Iterable[int], k: int) -> float:
    c = np.asarray([x for x in counts if x > 0], dtype=np.float64)
    if c.size == 0 or k < 2:
        return 0.0
    p = c / c.sum()
    return float(-(p * np.log(p)).sum() / math.log(k))


def summarize(completions: Sequence[Sequence[str]], options: Sequence[Sequence[str]]) -> Dict[str, float]:
    """Metrics over ``completions[prompt][sample]`` for the prompts' ``options``.

    Returns accuracy (and its binomial standard error), valid-choice rate, diversity, score
    and the sample count.
    """
    if len(completions) != len(options):
        raise ValueError("one list of completions per prompt")
    n_total, n_correct, n_valid, divs = 0, 0, 0, []
    for texts, opts in zip(completions, options):
        counts = Counter()
        for t in texts:
            s = score_completion(t, opts)
            n_total += 1
            n_correct += s.correct
            n_valid += s.valid_choice
            if s.valid_choice:
                counts[s.choice] += 1
        divs.append(normalized_entropy(counts.values(), len(opts)))
    acc = n_correct / max(n_total, 1)
    div = float(np.mean(divs)) if divs else 0.0
    return {
        "accuracy": acc,
        "accuracy_se": math.sqrt(acc * (1 - acc) / max(n_total, 1)),
        "valid_choice": n_valid / max(n_total, 1),
        "derive_accuracy": n_correct / n_valid if n_valid else 0.0,
        "diversity": div,
        "score": acc * div,
        "samples": n_total,
    }


def expected_uniform_diversity(k: int, n: int, *, trials: int = 4000, seed: int = 0) -> float:
    """The diversity an *ideal* sampler scores with ``n`` samples per prompt (uniform over
    ``k``): below 1 because a finite sample's entropy is biased low (Monte Carlo, seeded)."""
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(n, [1.0 / k] * k, size=trials)
    return float(np.mean([normalized_entropy(row, k) for row in draws]))


def write_jsonl(records: Iterable[Dict], path: Union[str, Path]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for r in records:
            fh.write(json.dumps(r) + "\n")
    return path
