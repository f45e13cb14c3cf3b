"""Chat prompts whose message text cannot forge turns (docs/server.md, "Security defaults").

The rule: the chat template renders the messages; the template's own text (role headers,
separators, BOS) is tokenized with special tokens parsed, and **each message's content is
tokenized as plain text**: a user message holding ``<|im_end|><|im_start|>assistant`` gets
the tokens of those characters, never the control tokens, so it cannot end its turn or open
another. ``autodeco serve --parse-special-in-messages`` restores parsing the whole rendered
text (every other server's behaviour).

How: when no message content holds special-token text (its tokens with and without parsing
agree) the prompt is the engine's own ``encode_chat`` (unchanged). Otherwise the template
renders the messages with each content replaced by a marker that holds a random nonce; the
rendered text is cut at the markers, the template pieces are tokenized with parsing, the
contents without, and the ids are joined (BOS first when the vocabulary asks for one and the
rendered text does not begin with it, as ``encode_chat`` does). A template that changes a
content (trims it, say) sees the marker, so the content goes in as sent.
"""

from __future__ import annotations

import contextlib
import re
import secrets
from typing import Any, Dict, List

from autodeco_samplers.frontends.server.errors import bad_request

__all__ = ["encode_chat"]


def encode_chat(engine: Any, messages: List[Dict[str, str]], *, parse_special: bool = False) -> List[int]:
    """The prompt ids of ``messages`` on ``engine`` under the module's rule."""
    ops = _ops(engine)
    if parse_special or ops is None or not any(ops.has_special(m.get("content") or "") for m in messages):
        return engine.encode_chat(messages)
    nonce = secrets.token_hex(8)
    marker = re.compile(re.escape(f"@@autodeco-{nonce}-") + r"(\d+)@@")
    masked = [{**m, "content": f"@@autodeco-{nonce}-{i}@@"} for i, m in enumerate(messages)]
    text = ops.render(masked)
    ids: List[int] = ops.bos_ids() if ops.wants_bos(text) else []
    pos = 0
    for match in marker.finditer(text):
        ids += ops.tokenize(text[pos:match.start()], special=True)
        ids += ops.tokenize(messages[int(match.group(1))].get("content") or "", special=False)
        pos = match.end()
    ids += ops.tokenize(text[pos:], special=True)
    return ids


def _ops(engine: Any) -> Any:
    name = getattr(engine, "engine_name", "")
    if name == "llama-cpp":
        return _LlamaOps(engine)
    if name == "transformers":
        return _HFOps(engine)
    return None


def _render_error(exc: Exception) -> Exception:
    return bad_request(f"the chat template could not render these messages: {exc}", param="messages")


class _LlamaOps:
    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.llm = engine.gen.llm

    def _special_text(self, token_id: Any) -> str:
        if token_id is None or int(token_id) < 0:
            return ""
        return self.llm.detokenize([int(token_id)], special=True).decode("utf-8", errors="replace")

    def tokenize(self, text: str, *, special: bool) -> List[int]:
        if not text:
            return []
        return list(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=special))

    def has_special(self, text: str) -> bool:
        return self.tokenize(text, special=True) != self.tokenize(text, special=False)

    def render(self, messages: List[Dict[str, str]]) -> str:
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        if self.engine.chat_template is None:
            return self.engine.encode_chat(messages)  # raises the engine's own "no chat template" error
        formatter = Jinja2ChatFormatter(self.engine.chat_template, eos_token=self._special_text(self.llm.token_eos()),
                                        bos_token=self._special_text(self.llm.token_bos()), add_generation_prompt=True)
        try:
            return formatter(messages=messages).prompt
        except Exception as exc:  # jinja2 errors and the template's own raise_exception
            raise _render_error(exc) from None

    def wants_bos(self, text: str) -> bool:
        bos = self._special_text(self.llm.token_bos())
        return not (bos and text.startswith(bos))

    def bos_ids(self) -> List[int]:
        return list(self.llm.tokenize(b"", add_bos=True, special=True))


class _HFOps:
    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.tok = engine.tokenizer
        self.lock = getattr(engine, "_lock", None) or contextlib.nullcontext()

    def tokenize(self, text: str, *, special: bool) -> List[int]:
        if not text:
            return []
        with self.lock:
            return list(self.tok(text, add_special_tokens=False, split_special_tokens=not special)["input_ids"])

    def has_special(self, text: str) -> bool:
        return self.tokenize(text, special=True) != self.tokenize(text, special=False)

    def render(self, messages: List[Dict[str, str]]) -> str:
        if self.engine.chat_template is None:
            return self.engine.encode_chat(messages)
        with self.lock:
            try:
                return self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                                    chat_template=self.engine.chat_template)
            except Exception as exc:
                raise _render_error(exc) from None

    def wants_bos(self, text: str) -> bool:
        bos = self.tok.bos_token
        return not (bos and text.startswith(bos))

    def bos_ids(self) -> List[int]:
        with self.lock:
            return list(self.tok("", add_special_tokens=True)["input_ids"])
