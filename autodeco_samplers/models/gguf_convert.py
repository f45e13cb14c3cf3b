"""Convert the project's own Llama-architecture models (HF safetensors + ``tokenizer.json``) to GGUF.

Scope: the tiny test and demo models built by
:func:`autodeco_samplers.models.tiny_models.save_tiny_model` with ``arch="llama"`` (and any plain
Llama checkpoint of the same shape: RMSNorm, SwiGLU MLP, rotary attention with default RoPE,
no biases, byte-level BPE tokenizer). Real users bring GGUF files made by llama.cpp's own
tools; this converter exists so that tests, demos and benchmarks can build a matching pair of
(transformers model, GGUF model) from a seed without downloading anything.

Needs NumPy and the ``gguf`` package only (no torch): weights are read with the project's own
safetensors reader (:mod:`autodeco_samplers.heads.io.safetensors_io`), the tokenizer from the
``tokenizer.json`` text.

Exact rules:

* Tensor names follow llama.cpp's ``llama`` architecture (``token_embd``, ``blk.N.attn_q`` ...,
  ``output_norm``, ``output``). ``q_proj`` / ``k_proj`` rows are permuted the way llama.cpp's
  rotary embedding expects: for ``n`` heads (``n_kv`` for ``k_proj``) the ``[n, 2, d/2, H]``
  view of the weight is transposed to ``[n, d/2, 2, H]``.
* ``dtype="f16"`` stores every 2-D weight as float16; 1-D norm weights stay float32.
  ``dtype="f32"`` stores everything as float32 (bf16 sources are widened exactly).
* The tokenizer becomes a ``gpt2`` vocabulary with the ``gpt-2`` pre-tokenizer (the same
  regex as the ``tokenizers`` ByteLevel pre-tokenizer), ids unchanged; special added tokens
  are CONTROL tokens; ids between the tokenizer's size and the model's ``vocab_size`` are
  filled with ``[PAD<id>]`` UNUSED tokens. BOS is added only if the tokenizer's post-processor
  adds it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Union

import numpy as np

from autodeco_samplers.core.errors import AutoDecoError, CheckpointError

__all__ = [
    "LlamaGGUFParams",
    "GGUFVocab",
    "convert_llama_to_gguf",
    "read_llama_params",
    "read_tokenizer_vocab",
    "write_llama_gguf",
    "permute_rotary",
]

SUPPORTED_MODEL_TYPES = ("llama",)
DTYPES = ("f32", "f16")
TOKEN_NORMAL, TOKEN_CONTROL, TOKEN_USER_DEFINED, TOKEN_UNUSED = 1, 3, 4, 5


@dataclass(frozen=True)
class LlamaGGUFParams:
    """The hyper-parameters llama.cpp needs for a ``llama`` GGUF."""

    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    intermediate_size: int
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    context_length: int = 2048
    head_dim: Optional[int] = None
    tie_word_embeddings: bool = False
    name: str = "autodeco-tiny-llama"

    @property
    def rope_dim(self) -> int:
        return self.head_dim or self.hidden_size // self.num_heads


@dataclass(frozen=True)
class GGUFVocab:
    """A byte-level BPE vocabulary in GGUF form (``tokens[i]`` is id ``i``)."""

    tokens: List[str]
    token_types: List[int]
    merges: List[str]
    bos_token_id: Optional[int] = None
    eos_token_id: Optional[int] = None
    pad_token_id: Optional[int] = None
    add_bos: bool = False
    add_eos: bool = False


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: cannot be read as JSON ({exc})") from None


def read_llama_params(config: Mapping) -> LlamaGGUFParams:
    """Check an HF ``config.json`` dict is in scope and return its GGUF parameters."""
    model_type = config.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise CheckpointError(
            f"convert-gguf supports model_type {SUPPORTED_MODEL_TYPES} only, got {model_type!r}; "
            "use llama.cpp's own convert_hf_to_gguf.py for other architectures"
        )
    for flag in ("attention_bias", "mlp_bias"):
        if config.get(flag):
            raise CheckpointError(f"convert-gguf: {flag}=true is not supported")
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type not in (None, "default"):
        raise CheckpointError(f"convert-gguf: rope type {rope_type!r} is not supported (only default RoPE)")
    if config.get("hidden_act", "silu") != "silu":
        raise CheckpointError(f"convert-gguf: hidden_act {config.get('hidden_act')!r} is not supported (only silu)")
    heads = int(config["num_attention_heads"])
    hidden = int(config["hidden_size"])
    head_dim = config.get("head_dim")
    return LlamaGGUFParams(
        vocab_size=int(config["vocab_size"]),
        hidden_size=hidden,
        num_layers=int(config["num_hidden_layers"]),
        num_heads=heads,
        num_kv_heads=int(config.get("num_key_value_heads") or heads),
        intermediate_size=int(config["intermediate_size"]),
        rms_norm_eps=float(config.get("rms_norm_eps", 1e-6)),
        rope_theta=float(rope.get("rope_theta", config.get("rope_theta", 10000.0))),
        context_length=int(config.get("max_position_embeddings", 2048)),
        head_dim=None if head_dim is None or int(head_dim) == hidden // heads else int(head_dim),
        tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
        name=str(config.get("_name_or_path") or "autodeco-tiny-llama"),
    )


def _has_byte_level(pre: Optional[dict]) -> bool:
    if not pre:
        return False
    if pre.get("type") == "ByteLevel":
        return bool(pre.get("use_regex", True))
    if pre.get("type") == "Sequence":
        return any(_has_byte_level(p) for p in pre.get("pretokenizers", []))
    return False


def read_tokenizer_vocab(
    tokenizer_json: Union[str, Path],
    vocab_size: int,
    *,
    bos_token_id: Optional[int] = None,
    eos_token_id: Optional[int] = None,
    pad_token_id: Optional[int] = None,
) -> GGUFVocab:
    """Turn a byte-level BPE ``tokenizer.json`` into a :class:`GGUFVocab` of ``vocab_size`` ids."""
    path = Path(tokenizer_json)
    data = _json(path)
    model = data.get("model") or {}
    if model.get("type") != "BPE" or not _has_byte_level(data.get("pre_tokenizer")) or data.get("normalizer"):
        raise CheckpointError(
            f"{path}: only byte-level BPE tokenizers (GPT-2 style, no normalizer) can be converted"
        )
    tokens: List[Optional[str]] = [None] * vocab_size
    types = [TOKEN_UNUSED] * vocab_size
    for tok, idx in model["vocab"].items():
        if idx >= vocab_size:
            raise CheckpointError(f"{path}: token id {idx} ({tok!r}) exceeds the model's vocab_size {vocab_size}")
        tokens[idx], types[idx] = tok, TOKEN_NORMAL
    for added in data.get("added_tokens", []):
        idx = int(added["id"])
        if idx >= vocab_size:
            raise CheckpointError(f"{path}: added token id {idx} exceeds the model's vocab_size {vocab_size}")
        tokens[idx] = added["content"]
        types[idx] = TOKEN_CONTROL if added.get("special") else TOKEN_USER_DEFINED
    for i, tok in enumerate(tokens):
        if tok is None:
            tokens[i] = f"[PAD{i}]"
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    if not merges:
        raise CheckpointError(f"{path}: the BPE tokenizer has no merges; llama.cpp cannot load a BPE vocabulary without them")
    post = data.get("post_processor") or {}
    single = post.get("single") or []

    def adds(position: int, token_id: Optional[int]) -> bool:
        if not single or token_id is None or "SpecialToken" not in single[position]:
            return False
        name = single[position]["SpecialToken"]["id"]
        ids = (post.get("special_tokens", {}).get(name) or {}).get("ids") or []
        return ids == [token_id]

    return GGUFVocab(
        tokens=[str(t) for t in tokens],
        token_types=types,
        merges=merges,
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
        add_bos=adds(0, bos_token_id),
        add_eos=adds(-1, eos_token_id),
    )


def permute_rotary(weight: np.ndarray, n_head: int) -> np.ndarray:
    """Reorder q/k projection rows from HF's half-split rotary layout to llama.cpp's
    interleaved one: view ``[n_head, 2, d/2, H]``, swap the middle axes, flatten back."""
    rows = weight.shape[0]
    if rows % (2 * n_head):
        raise CheckpointError(f"cannot permute a [{rows}, ...] projection for {n_head} rotary heads")
    return weight.reshape(n_head, 2, rows // n_head // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def _gguf_tensor_plan(p: LlamaGGUFParams) -> Dict[str, str]:
    """GGUF tensor name -> HF tensor name."""
    plan = {
        "token_embd.weight": "model.embed_tokens.weight",
        "output_norm.weight": "model.norm.weight",
    }
    if not p.tie_word_embeddings:
        plan["output.weight"] = "lm_head.weight"
    for i in range(p.num_layers):
        hf, g = f"model.layers.{i}.", f"blk.{i}."
        plan.update({
            g + "attn_norm.weight": hf + "input_layernorm.weight",
            g + "attn_q.weight": hf + "self_attn.q_proj.weight",
            g + "attn_k.weight": hf + "self_attn.k_proj.weight",
            g + "attn_v.weight": hf + "self_attn.v_proj.weight",
            g + "attn_output.weight": hf + "self_attn.o_proj.weight",
            g + "ffn_norm.weight": hf + "post_attention_layernorm.weight",
            g + "ffn_gate.weight": hf + "mlp.gate_proj.weight",
            g + "ffn_up.weight": hf + "mlp.up_proj.weight",
            g + "ffn_down.weight": hf + "mlp.down_proj.weight",
        })
    return plan


def _expected_hf_shape(name: str, p: LlamaGGUFParams):
    d = p.rope_dim
    table = {
        "model.embed_tokens.weight": (p.vocab_size, p.hidden_size),
        "lm_head.weight": (p.vocab_size, p.hidden_size),
        "model.norm.weight": (p.hidden_size,),
        "input_layernorm.weight": (p.hidden_size,),
        "post_attention_layernorm.weight": (p.hidden_size,),
        "self_attn.q_proj.weight": (p.num_heads * d, p.hidden_size),
        "self_attn.k_proj.weight": (p.num_kv_heads * d, p.hidden_size),
        "self_attn.v_proj.weight": (p.num_kv_heads * d, p.hidden_size),
        "self_attn.o_proj.weight": (p.hidden_size, p.num_heads * d),
        "mlp.gate_proj.weight": (p.intermediate_size, p.hidden_size),
        "mlp.up_proj.weight": (p.intermediate_size, p.hidden_size),
        "mlp.down_proj.weight": (p.hidden_size, p.intermediate_size),
    }
    if name in table:
        return table[name]
    return table[name.split(".", 3)[3]]


def write_llama_gguf(
    out: Union[str, Path],
    params: LlamaGGUFParams,
    get_tensor: Callable[[str], np.ndarray],
    vocab: GGUFVocab,
    *,
    dtype: str = "f32",
    chat_template: Optional[str] = None,
) -> Path:
    """Write a ``llama`` GGUF from HF-named tensors (``get_tensor(hf_name) -> ndarray``).

    ``chat_template`` (a Jinja string, as in ``tokenizer_config.json``) is stored as
    ``tokenizer.chat_template``, where llama.cpp and llama-cpp-python look for it.

    Shapes are checked against ``params`` (:class:`CheckpointError` naming the tensor).
    """
    import gguf

    if dtype not in DTYPES:
        raise AutoDecoError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    if len(vocab.tokens) != params.vocab_size:
        raise CheckpointError(f"vocabulary has {len(vocab.tokens)} tokens but the model's vocab_size is {params.vocab_size}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    w = gguf.GGUFWriter(str(out), "llama")
    w.add_name(params.name)
    w.add_context_length(params.context_length)
    w.add_embedding_length(params.hidden_size)
    w.add_block_count(params.num_layers)
    w.add_feed_forward_length(params.intermediate_size)
    w.add_head_count(params.num_heads)
    w.add_head_count_kv(params.num_kv_heads)
    w.add_layer_norm_rms_eps(params.rms_norm_eps)
    w.add_rope_freq_base(params.rope_theta)
    w.add_rope_dimension_count(params.rope_dim)
    if params.head_dim is not None:
        w.add_key_length(params.head_dim)
        w.add_value_length(params.head_dim)
    w.add_vocab_size(params.vocab_size)
    w.add_file_type(gguf.LlamaFileType.ALL_F32 if dtype == "f32" else gguf.LlamaFileType.MOSTLY_F16)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt-2")
    w.add_token_list(vocab.tokens)
    w.add_token_types(vocab.token_types)
    w.add_token_merges(vocab.merges)
    for setter, value in ((w.add_bos_token_id, vocab.bos_token_id), (w.add_eos_token_id, vocab.eos_token_id), (w.add_pad_token_id, vocab.pad_token_id)):
        if value is not None:
            setter(int(value))
    w.add_add_bos_token(vocab.add_bos)
    w.add_add_eos_token(vocab.add_eos)
    if chat_template:
        w.add_chat_template(chat_template)
    for gname, hname in _gguf_tensor_plan(params).items():
        arr = np.asarray(get_tensor(hname))
        want = _expected_hf_shape(hname, params)
        if tuple(arr.shape) != tuple(want):
            raise CheckpointError(f"tensor {hname!r} has shape {list(arr.shape)}, expected {list(want)}")
        if gname.endswith("attn_q.weight"):
            arr = permute_rotary(arr, params.num_heads)
        elif gname.endswith("attn_k.weight"):
            arr = permute_rotary(arr, params.num_kv_heads)
        target = np.float16 if (dtype == "f16" and arr.ndim == 2) else np.float32
        w.add_tensor(gname, np.ascontiguousarray(arr, dtype=target))
    try:
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
    finally:
        w.close()
    return out


def _safetensors_files(model_dir: Path) -> List[Path]:
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"{model_dir}: no *.safetensors file found")
    return files


def convert_llama_to_gguf(model_dir: Union[str, Path], out: Union[str, Path], *, dtype: str = "f32") -> Path:
    """Convert an HF Llama folder (``config.json``, ``*.safetensors``, ``tokenizer.json``) to GGUF.

    A ``chat_template`` string in ``tokenizer_config.json`` is carried over as
    ``tokenizer.chat_template``.

    >>> # convert_llama_to_gguf("tiny-llama/", "tiny-llama.gguf", dtype="f16")
    """
    from autodeco_samplers.heads.io.safetensors_io import read_header, read_tensor

    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise CheckpointError(f"{model_dir}: not a model folder")
    for needed in ("config.json", "tokenizer.json"):
        if not (model_dir / needed).exists():
            raise CheckpointError(f"{model_dir}: {needed} is missing")
    config = _json(model_dir / "config.json")
    params = read_llama_params(config)
    entries = {}
    for file in _safetensors_files(model_dir):
        entries.update(read_header(file)[0])
    missing = [h for h in _gguf_tensor_plan(params).values() if h not in entries]
    if missing:
        raise CheckpointError(f"{model_dir}: missing tensor(s) {missing[:5]}{' ...' if len(missing) > 5 else ''}")

    def get(name: str) -> np.ndarray:
        return read_tensor(entries[name])

    def special(key: str) -> Optional[int]:
        value = config.get(key)
        if isinstance(value, list):
            value = value[0] if value else None
        return None if value is None else int(value)

    vocab = read_tokenizer_vocab(
        model_dir / "tokenizer.json",
        params.vocab_size,
        bos_token_id=special("bos_token_id"),
        eos_token_id=special("eos_token_id"),
        pad_token_id=special("pad_token_id"),
    )
    tok_config = model_dir / "tokenizer_config.json"
    template = _json(tok_config).get("chat_template") if tok_config.is_file() else None
    return write_llama_gguf(out, params, get, vocab, dtype=dtype,
                            chat_template=template if isinstance(template, str) else None)
