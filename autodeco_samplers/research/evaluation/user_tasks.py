"""A user's own task file for ``autodeco eval --tasks FILE.jsonl`` (docs/evaluation.md,
"Your own tasks"): one JSON object per line, read into :class:`TaskItem` objects that
:func:`autodeco_samplers.research.evaluation.chat.evaluate_items` scores with :data:`CHECKER`.

A line::

    {"id": "q1", "prompt": "2+2=", "check": {"kind": "exact", "answer": "4"},
     "family": "arithmetic", "heldout_family": true}

* ``prompt`` (a string) or ``messages`` (chat messages ``[{"role", "content"}]``, rendered with
  the model's chat template and its generation prompt) -- exactly one of them;
* ``check``: ``{"kind": ...}`` with
  ``exact`` (``answer``: the stripped answer equals it), ``contains`` (``answer``: the answer
  contains it), ``regex`` (``pattern``: :func:`re.search` finds it), ``one_of`` (``answers``: the
  stripped answer equals one of them) -- the *closed* kinds, scored correct / wrong -- and
  ``open`` (``valid``: a list of valid answers, or ``pattern``: a regex; the item's valid answer
  is the valid string that occurs first in the answer, or the regex's first match, group 1
  when it has groups), scored by the number of distinct valid answers among the samples.
  Matching ignores case unless ``"case_sensitive": true``;
* optional ``id`` (default ``line<N>``, unique), ``family`` (default ``"tasks"`` for closed items,
  ``"open"`` for open ones) and ``heldout_family`` (bool: the heads never trained on this
  family; marked on every item or on none).

A bad file raises :class:`TaskFileError` naming the file, the line and the field.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from autodeco_samplers.core.errors import UsageError

__all__ = ["CLOSED_KINDS", "KINDS", "TaskFileError", "TaskItem", "load_tasks", "parse_task", "check", "canonical_answer",
           "CHECKER", "with_prompt_ids"]

CLOSED_KINDS = ("exact", "contains", "regex", "one_of")
KINDS = CLOSED_KINDS + ("open",)
_FIELDS = {"id", "prompt", "messages", "check", "family", "heldout_family"}
_CHECK_FIELDS = {"exact": {"answer"}, "contains": {"answer"}, "regex": {"pattern"}, "one_of": {"answers"},
                 "open": {"valid", "pattern"}}


class TaskFileError(UsageError):
    """A task file that cannot be read: the message names the file, line and field."""


@dataclass(frozen=True)
class TaskItem:
    """One line of a task file. ``key`` is its id; ``prompt`` the text (or None with
    ``messages``); ``check`` the checker spec; ``open`` for the open kind; ``prompt_ids`` the
    token ids once rendered for a model (:func:`with_prompt_ids`)."""

    key: str
    family: str
    check: Dict[str, Any]
    prompt: Optional[str] = None
    messages: Optional[Tuple[Dict[str, str], ...]] = None
    heldout_family: Optional[bool] = None
    line: int = 0
    prompt_ids: Optional[Tuple[int, ...]] = field(default=None, compare=False)

    @property
    def open(self) -> bool:
        return self.check["kind"] == "open"

    @property
    def question(self) -> str:
        return self.prompt if self.prompt is not None else self.messages[-1]["content"]


def _err(where: str, fld: str, problem: str) -> TaskFileError:
    return TaskFileError(f"{where}: field {fld!r}: {problem}")


def _string(obj: Dict[str, Any], key: str, where: str, fld: str) -> str:
    v = obj.get(key)
    if not isinstance(v, str) or not v:
        raise _err(where, fld, f"expected a non-empty string, got {v!r}")
    return v


def _check_spec(spec: Any, where: str) -> Dict[str, Any]:
    if not isinstance(spec, dict):
        raise _err(where, "check", f"expected an object with a 'kind', got {spec!r}")
    kind = spec.get("kind")
    if kind not in KINDS:
        raise _err(where, "check.kind", f"unknown kind {kind!r} (expected one of {', '.join(KINDS)})")
    allowed = _CHECK_FIELDS[kind] | {"kind", "case_sensitive"}
    extra = sorted(set(spec) - allowed)
    if extra:
        raise _err(where, f"check.{extra[0]}", f"not a field of the {kind} check (fields: {', '.join(sorted(allowed))})")
    if not isinstance(spec.get("case_sensitive", False), bool):
        raise _err(where, "check.case_sensitive", "expected true or false")
    flags = 0 if spec.get("case_sensitive") else re.IGNORECASE
    if kind in ("exact", "contains"):
        _string(spec, "answer", where, "check.answer")
    elif kind == "one_of" or (kind == "open" and "pattern" not in spec):
        key = "answers" if kind == "one_of" else "valid"
        v = spec.get(key)
        if not isinstance(v, list) or not v or not all(isinstance(a, str) and a for a in v):
            raise _err(where, f"check.{key}", f"expected a non-empty list of non-empty strings, got {v!r}")
    if kind == "open" and "pattern" in spec and "valid" in spec:
        raise _err(where, "check", "an open check takes 'valid' or 'pattern', not both")
    if "pattern" in spec:
        pat = _string(spec, "pattern", where, "check.pattern")
        try:
            re.compile(pat, flags)
        except re.error as e:
            raise _err(where, "check.pattern", f"not a valid regular expression: {e}") from None
    return dict(spec)


def parse_task(obj: Any, where: str, line: int = 0) -> TaskItem:
    """One parsed JSON line -> :class:`TaskItem` (errors name ``where`` and the field)."""
    if not isinstance(obj, dict):
        raise TaskFileError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    extra = sorted(set(obj) - _FIELDS)
    if extra:
        raise _err(where, extra[0], f"unknown field (fields: {', '.join(sorted(_FIELDS))})")
    if ("prompt" in obj) == ("messages" in obj):
        raise _err(where, "prompt", "give exactly one of 'prompt' (a string) or 'messages' (chat messages)")
    prompt, messages = None, None
    if "prompt" in obj:
        prompt = _string(obj, "prompt", where, "prompt")
    else:
        msgs = obj["messages"]
        if not isinstance(msgs, list) or not msgs:
            raise _err(where, "messages", f"expected a non-empty list of {{'role', 'content'}} objects, got {msgs!r}")
        for k, m in enumerate(msgs):
            if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
                raise _err(where, f"messages[{k}]", f"expected {{'role': str, 'content': str}}, got {m!r}")
        messages = tuple({"role": m["role"], "content": m["content"]} for m in msgs)
    if "check" not in obj:
        raise _err(where, "check", "missing (e.g. {\"kind\": \"exact\", \"answer\": \"4\"})")
    spec = _check_spec(obj["check"], where)
    key = obj.get("id", f"line{line}")
    if not isinstance(key, (str, int)) or isinstance(key, bool) or key == "":
        raise _err(where, "id", f"expected a non-empty string or an integer, got {key!r}")
    family = obj.get("family", "open" if spec["kind"] == "open" else "tasks")
    if not isinstance(family, str) or not family:
        raise _err(where, "family", f"expected a non-empty string, got {family!r}")
    held = obj.get("heldout_family")
    if held is not None and not isinstance(held, bool):
        raise _err(where, "heldout_family", f"expected true or false, got {held!r}")
    return TaskItem(str(key), family, spec, prompt, messages, held, line)


def load_tasks(path: Union[str, Path]) -> List[TaskItem]:
    """Read a task file (module docstring); blank lines are skipped. Checks across lines:
    unique ids, a family is all closed or all open, ``heldout_family`` given on every item or
    on none and the same within a family."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise TaskFileError(f"{path}: cannot read the task file: {e.strerror or e}") from None
    items: List[TaskItem] = []
    seen: Dict[str, int] = {}
    for n, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        where = f"{path} line {n}"
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as e:
            raise TaskFileError(f"{where}: not valid JSON: {e.msg} (column {e.colno})") from None
        it = parse_task(obj, where, n)
        if it.key in seen:
            raise _err(where, "id", f"{it.key!r} is already the id of line {seen[it.key]}")
        seen[it.key] = n
        items.append(it)
    if not items:
        raise TaskFileError(f"{path}: no tasks (one JSON object per line)")
    fam_open: Dict[str, Tuple[bool, int]] = {}
    fam_held: Dict[str, Tuple[Optional[bool], int]] = {}
    for it in items:
        where = f"{path} line {it.line}"
        o, first = fam_open.setdefault(it.family, (it.open, it.line))
        if o != it.open:
            raise _err(where, "family", f"family {it.family!r} mixes open and closed checks (line {first} is "
                                        f"{'open' if o else 'closed'})")
        h, first = fam_held.setdefault(it.family, (it.heldout_family, it.line))
        if h != it.heldout_family:
            raise _err(where, "heldout_family", f"differs from line {first} of the same family {it.family!r}")
    marked = [it.heldout_family is not None for it in items]
    if any(marked) and not all(marked):
        it = items[marked.index(False)]
        raise _err(f"{path} line {it.line}", "heldout_family", "missing here but given on other lines (mark every item or none)")
    return items


def _norm(text: str, spec: Dict[str, Any]) -> str:
    text = text.strip()
    return text if spec.get("case_sensitive") else text.casefold()


def _flags(spec: Dict[str, Any]) -> int:
    return 0 if spec.get("case_sensitive") else re.IGNORECASE


def canonical_answer(item: TaskItem, text: str) -> Optional[str]:
    """An open item's valid answer in ``text`` (module docstring; casefolded unless
    case-sensitive), None when there is none or the item is closed."""
    spec = item.check
    if spec["kind"] != "open":
        return None
    if "pattern" in spec:
        m = re.search(spec["pattern"], text, _flags(spec))
        if m is None:
            return None
        found = m.group(1) if m.re.groups else m.group(0)
        return None if found is None else _norm(found, spec)
    hay = text if spec.get("case_sensitive") else text.casefold()
    hits = [(hay.find(_norm(v, spec)), k) for k, v in enumerate(spec["valid"]) if _norm(v, spec) in hay]
    return _norm(spec["valid"][min(hits)[1]], spec) if hits else None


def check(item: TaskItem, text: str) -> bool:
    """Whether ``text`` answers ``item`` (module docstring); an open item: it names a valid answer."""
    spec, kind = item.check, item.check["kind"]
    if kind == "exact":
        return _norm(text, spec) == _norm(spec["answer"], spec)
    if kind == "contains":
        return _norm(spec["answer"], spec) in (text if spec.get("case_sensitive") else text.casefold())
    if kind == "regex":
        return re.search(spec["pattern"], text, _flags(spec)) is not None
    if kind == "one_of":
        return _norm(text, spec) in {_norm(a, spec) for a in spec["answers"]}
    return canonical_answer(item, text) is not None


#: ``(check, canonical_answer)``, the ``checker`` of :func:`chat.evaluate_items`
CHECKER = (check, canonical_answer)


def with_prompt_ids(items: Sequence[TaskItem], tokenizer) -> List[TaskItem]:
    """Each item with its ``prompt_ids`` for a transformers tokenizer: a ``prompt`` tokenized
    with the tokenizer's special tokens (as the model sees a plain prompt), ``messages``
    through the tokenizer's chat template with the generation prompt (an error naming the
    line when the tokenizer has none)."""
    from dataclasses import replace

    out = []
    for it in items:
        if it.messages is not None:
            if not getattr(tokenizer, "chat_template", None):
                raise TaskFileError(f"line {it.line}: field 'messages': this model's tokenizer has no chat template; "
                                    f"use 'prompt' instead")
            text = tokenizer.apply_chat_template(list(it.messages), tokenize=False, add_generation_prompt=True)
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        else:
            ids = tokenizer(it.prompt)["input_ids"]
        out.append(replace(it, prompt_ids=tuple(int(i) for i in ids)))
    return out
