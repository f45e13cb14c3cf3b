"""Request bodies of the OpenAI-compatible endpoints (pydantic, strict) and their validation.

The rules (what a valid request is; anything else is a 400 in OpenAI's error shape, see
:mod:`autodeco_samplers.frontends.server.errors`):

* types are strict, as OpenAI's are: ``"max_tokens": "5"`` or ``"stream": 1`` are refused,
  an integer is accepted where a number is expected; NaN and infinities are refused;
* unknown fields are refused (``Unrecognized request argument supplied: NAME``); OpenAI
  fields this server cannot honour are refused when set to anything but their neutral value
  (``frequency_penalty``/``presence_penalty`` other than 0, a non-empty ``logit_bias``,
  ``echo``, ``suffix``, ``best_of`` > 1, tools and functions, a ``response_format`` other
  than text); ``user``, ``metadata``, ``store`` and ``service_tier`` are accepted and ignored;
* ``temperature`` and ``top_p`` are **multipliers** of the heads' predicted T and P (any
  finite number >= 0; 0 temperature is greedy; the product of P is clamped to [0, 1]), as in
  :meth:`autodeco_samplers.core.policy.DecodingPolicy.for_request`; absent means 1;
* ``max_tokens`` >= 1 (chat also takes ``max_completion_tokens``), ``n`` in 1..16,
  ``logprobs`` (completions) and ``top_logprobs`` (chat) in 0..20, ``stop`` one string or up
  to 4;
* ``temperature`` and ``top_p`` are at most 1e6 (:data:`autodeco_samplers.core.policy.KNOB_MAX`), so
  the used T stays inside float32 on every engine; a larger value is a 400 naming the limit;
* ``seed`` is any JSON integer, of any size or sign; the engines get ``seed mod 2**64``
  (:func:`engine_seed`; choice ``j`` gets ``(seed + j) mod 2**64``), the same on every engine,
  so ``-1`` and ``2**64 - 1`` are one seed;
* no string anywhere in the body may hold a lone UTF-16 surrogate (``"\\ud800"``): it is not
  text, and is refused with a 400 naming the field;
* ``autodeco`` is this server's extension object: ``{"trace": true}`` returns each token's
  ``token_id``, ``T_pred``, ``P_pred``, ``T``, ``P`` in the answer and in every stream chunk.
"""

from __future__ import annotations

from typing import Any, Dict, List, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from autodeco_samplers.core.policy import check_knob
from autodeco_samplers.frontends.server.errors import bad_request

__all__ = [
    "AutoDecoOptions",
    "ChatCompletionRequest",
    "ChatMessage",
    "CompletionRequest",
    "SEED_MODULUS",
    "engine_seed",
    "parse_request",
]

MAX_N = 16
MAX_LOGPROBS = 20
MAX_STOPS = 4
SEED_MODULUS = 2**64


def engine_seed(seed: Optional[int], choice: int = 0) -> Optional[int]:
    """The seed the engine gets for choice ``choice`` of a request with ``seed``:
    ``(seed + choice) mod 2**64``, in ``[0, 2**64)`` whatever the sign or size of ``seed``
    (``None`` stays ``None``: the engine draws one)."""
    return None if seed is None else (int(seed) + int(choice)) % SEED_MODULUS


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class AutoDecoOptions(_Strict):
    """The ``"autodeco"`` extension object: ``trace`` returns each token's T and P;
    ``fixed_temperature`` / ``fixed_top_p`` replace the heads' predicted T / P for this request
    (static decoding, :class:`~autodeco_samplers.core.policy.DecodingPolicy`'s fields of the same
    names: the request's multipliers still apply, ``T = fixed_temperature * temperature``)."""

    trace: bool = False
    fixed_temperature: Optional[float] = None
    fixed_top_p: Optional[float] = None

    @field_validator("fixed_temperature", "fixed_top_p")
    @classmethod
    def _fixed(cls, value: Optional[float], info: ValidationInfo) -> Optional[float]:
        if value is None:
            return None
        if info.field_name == "fixed_top_p" and value > 1:
            raise ValueError(f"'autodeco.fixed_top_p' must lie in [0, 1], got {value!r}")
        return check_knob(f"'autodeco.{info.field_name}'", value)

    def fixed(self) -> Dict[str, float]:
        """The overrides this request sets, as ``DecodingPolicy`` keyword arguments."""
        return {k: v for k, v in (("fixed_temperature", self.fixed_temperature), ("fixed_top_p", self.fixed_top_p))
                if v is not None}


class StreamOptions(_Strict):
    include_usage: bool = False


class _Sampling(_Strict):
    """Fields common to both endpoints."""

    model: str
    max_tokens: Optional[int] = Field(None, ge=1)
    temperature: Optional[float] = None  # a multiplier: the one request-knob rule, check_knob
    top_p: Optional[float] = None
    n: int = Field(1, ge=1, le=MAX_N)
    stream: bool = False
    stream_options: Optional[StreamOptions] = None
    stop: Union[str, List[str], None] = None
    seed: Optional[int] = None
    frequency_penalty: Optional[float] = None
    presence_penalty: Optional[float] = None
    logit_bias: Optional[Dict[str, float]] = None
    user: Optional[str] = None
    metadata: Optional[Dict[str, str]] = None
    store: Optional[bool] = None
    service_tier: Optional[str] = None
    autodeco: Optional[AutoDecoOptions] = None

    @field_validator("temperature", "top_p")
    @classmethod
    def _knob(cls, value: Optional[float], info: ValidationInfo) -> Optional[float]:
        return None if value is None else check_knob(info.field_name, value)

    @model_validator(mode="after")
    def _common(self) -> "_Sampling":
        if isinstance(self.stop, list) and len(self.stop) > MAX_STOPS:
            raise ValueError(f"'stop': at most {MAX_STOPS} stop sequences, got {len(self.stop)}")
        for name in ("frequency_penalty", "presence_penalty"):
            value = getattr(self, name)
            if value not in (None, 0, 0.0):
                raise ValueError(f"'{name}' is not supported (AutoDeco's heads choose T and P per token); leave it at 0")
        if self.logit_bias:
            raise ValueError("'logit_bias' is not supported: it would change the distribution the heads' T and P apply to")
        if self.stream_options is not None and not self.stream:
            raise ValueError("'stream_options' is only allowed when 'stream' is true")
        return self

    @property
    def trace(self) -> bool:
        return bool(self.autodeco and self.autodeco.trace)

    @property
    def stops(self) -> List[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class CompletionRequest(_Sampling):
    """``POST /v1/completions``. ``prompt`` is text, token ids, or a list of either (a batch:
    choice ``i * n + j`` is the ``j``-th sample of prompt ``i``)."""

    prompt: Union[str, List[str], List[int], List[List[int]]]
    logprobs: Optional[int] = Field(None, ge=0, le=MAX_LOGPROBS)
    echo: bool = False
    suffix: Optional[str] = None
    best_of: Optional[int] = None

    @model_validator(mode="after")
    def _completion(self) -> "CompletionRequest":
        if self.echo:
            raise ValueError("'echo' is not supported")
        if self.suffix is not None:
            raise ValueError("'suffix' is not supported")
        if self.best_of not in (None, 1):
            raise ValueError("'best_of' is not supported (only 1)")
        return self

    def prompts(self) -> List[Union[str, List[int]]]:
        """The batch: a list of prompts, each text or token ids."""
        p = self.prompt
        if isinstance(p, str):
            return [p]
        if not p:
            return []
        if all(isinstance(x, int) for x in p):
            return [list(p)]  # type: ignore[arg-type]
        return list(p)  # type: ignore[arg-type]


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class ChatMessage(_Strict):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Union[str, List[TextPart], None] = None
    name: Optional[str] = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class ChatCompletionRequest(_Sampling):
    """``POST /v1/chat/completions``: the messages go through the model's own chat template."""

    messages: List[ChatMessage] = Field(min_length=1)
    logprobs: bool = False
    top_logprobs: Optional[int] = Field(None, ge=0, le=MAX_LOGPROBS)
    max_completion_tokens: Optional[int] = Field(None, ge=1)
    response_format: Optional[Dict[str, Any]] = None
    tools: Optional[List[Any]] = None
    tool_choice: Optional[Any] = None
    parallel_tool_calls: Optional[bool] = None
    functions: Optional[List[Any]] = None
    function_call: Optional[Any] = None

    @model_validator(mode="after")
    def _chat(self) -> "ChatCompletionRequest":
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("'top_logprobs' needs 'logprobs': true")
        if self.max_tokens is not None and self.max_completion_tokens is not None and self.max_tokens != self.max_completion_tokens:
            raise ValueError("give 'max_tokens' or 'max_completion_tokens', not two different values")
        if self.response_format is not None and self.response_format.get("type") != "text":
            raise ValueError("'response_format' is not supported (only {\"type\": \"text\"})")
        for name in ("tools", "tool_choice", "functions", "function_call"):
            if getattr(self, name):
                raise ValueError(f"'{name}' is not supported by this server")
        return self

    @property
    def token_limit(self) -> Optional[int]:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    def message_dicts(self) -> List[Dict[str, str]]:
        out = []
        for m in self.messages:
            d = {"role": m.role, "content": m.text()}
            if m.name is not None:
                d["name"] = m.name
            out.append(d)
        return out


_UNION_TYPES = {
    "prompt": "a string, an array of strings, an array of token ids or an array of arrays of token ids",
    "stop": "a string or an array of strings",
    "content": "a string or an array of text parts",
}
_TYPE_NAMES = {"str", "int", "float", "bool", "list", "dict", "none"}


def _param(loc: tuple) -> str:
    """``("messages", 0, "content", "str")`` -> ``messages[0].content`` (union variant tags dropped)."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            continue
        text = str(part)
        if "[" in text or text.lower() in _TYPE_NAMES or text.startswith("function-"):
            continue  # pydantic's name of a union member or validator, not a field
        out += ("." if out else "") + text
    return out


def _message(errors: List[Dict[str, Any]]) -> tuple:
    """One OpenAI-style message (and its ``param``) for pydantic's errors."""
    first = errors[0]
    param = _param(tuple(first.get("loc", ())))
    kind = first.get("type", "")
    if kind == "extra_forbidden":
        return f"Unrecognized request argument supplied: {param}", param
    if kind == "missing":
        return f"Missing required parameter: '{param}'.", param
    if kind == "value_error":
        msg = str(first.get("msg", "")).removeprefix("Value error, ")
        return msg, (param or None)
    field = param.split(".")[-1].split("[")[0] if param else ""
    if len(errors) > 1 and field in _UNION_TYPES and all(_param(tuple(e.get("loc", ())))
                                                         .startswith(param.split("[")[0].split(".")[0]) for e in errors):
        return f"Invalid type for '{param}': expected {_UNION_TYPES[field]}.", param
    what = "type" if kind.endswith("_type") or kind.endswith("_parsing") else "value"
    return f"Invalid {what} for '{param}': {first.get('msg', 'invalid')}.", param


def _surrogate_param(body: Any) -> Optional[str]:
    """Where the first string (a value or a key) holding a lone surrogate is, as a ``param``
    path (``messages[0].content``), or ``None``. Iterative: a deep body cannot overflow it."""
    todo: List[tuple] = [("", body)]
    while todo:
        path, obj = todo.pop()
        if isinstance(obj, str):
            try:
                obj.encode("utf-8")
            except UnicodeEncodeError:
                return path or "(body)"
        elif isinstance(obj, dict):
            for key, value in reversed(list(obj.items())):
                sub = f"{path}.{key}" if path else str(key)
                todo.append((sub, key))
                todo.append((sub, value))
        elif isinstance(obj, list):
            todo.extend((f"{path}[{i}]", v) for i, v in reversed(list(enumerate(obj))))
    return None


def parse_request(model: type, body: Any) -> Any:
    """Validate a decoded JSON body into ``model``; raises a 400 :class:`APIError`."""
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object.")
    where = _surrogate_param(body)
    if where is not None:
        raise bad_request(f"Invalid value for '{where}': the string holds a lone UTF-16 surrogate (such as "
                          "\\ud800), which is not text; send valid Unicode.", param=where)
    try:
        return model.model_validate(body)
    except RecursionError:
        raise bad_request("The request body is nested too deeply.") from None
    except ValidationError as exc:
        message, param = _message(exc.errors(include_url=False))
        raise bad_request(message, param=param) from None

