"""The engines behind ``autodeco generate`` and ``autodeco demo``: one function per engine,
``(args, policy) -> (GenerationResult, pieces)``, wiring the command's flags to an adapter's
public API (the adapters themselves know nothing of the command line).

Text policy (the same for every engine, see :class:`~autodeco_samplers.core.interfaces.GenerationResult`):
``text`` and ``pieces`` never show special tokens; ``token_ids`` and ``steps`` hold every
generated token, the end-of-generation token included.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from autodeco_samplers.core.errors import AutoDecoError, CheckpointError
from autodeco_samplers.heads.io.detect import is_merged_checkpoint
from autodeco_samplers.core.interfaces import GenerationResult
from autodeco_samplers.core.policy import DecodingPolicy

__all__ = ["generate_for_cli"]


def generate_for_cli(engine: str, args: Any, policy: DecodingPolicy) -> Tuple[GenerationResult, Optional[List[str]]]:
    """Generate one prompt on ``engine`` (``"transformers"`` or ``"llama-cpp"``) with the
    command's ``args`` and the request's ``policy``."""
    return _RUNNERS[engine](args, policy)


def _transformers(args: Any, policy: DecodingPolicy) -> Tuple[GenerationResult, Optional[List[str]]]:
    """``autodeco generate --engine transformers``: one prompt, sampled with the heads.

    ``args.model`` is a merged AutoDeco folder, or a base folder with ``args.heads``.
    ``policy`` carries ``--temperature`` / ``--top-p`` (multipliers). ``args.seed`` seeds
    torch's global generator, which transformers' sampler uses. ``args.device`` (``auto``:
    CUDA when present) and ``args.threads`` (``auto``: torch's choice) place the model.
    The request itself was validated by the CLI
    (:func:`autodeco_samplers.frontends.validation.check_generate_request`).

    Text policy (the same for every engine, see :class:`~autodeco_samplers.core.interfaces.GenerationResult`):
    ``text`` and ``pieces`` never show special tokens (``skip_special_tokens=True``);
    ``token_ids`` and ``steps`` hold every generated token, EOS included.
    """
    import torch
    from transformers.utils import logging as hf_logging

    from autodeco_samplers.adapters.transformers import (
        AutoDecoLogitsProcessor,
        from_pretrained,
        load_tokenizer,
    )

    hf_logging.disable_progress_bar()  # the command line prints its own output only
    model_path = Path(args.model)
    if args.heads is None and not is_merged_checkpoint(model_path):
        raise CheckpointError(
            f"{model_path} is not a merged AutoDeco checkpoint (config.json model_type is not 'autodeco'); "
            "pass --heads PATH"
        )
    threads = getattr(args, "threads", None)
    if threads not in (None, "auto"):
        torch.set_num_threads(int(threads))
    device = getattr(args, "device", None) or "auto"
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model = from_pretrained(model_path, args.heads, policy=policy).to(device)
    tokenizer = None
    try:
        tokenizer = load_tokenizer(model_path)
    except Exception:
        if getattr(args, "prompt", None) is not None:
            raise AutoDecoError(f"{model_path}: no tokenizer found; use --prompt-ids") from None
    if getattr(args, "prompt_ids", None):
        ids = list(args.prompt_ids)
    else:
        ids = tokenizer(args.prompt, add_special_tokens=True)["input_ids"]
        if not ids:
            raise AutoDecoError("the prompt encodes to no tokens")
    input_ids = torch.tensor([ids], dtype=torch.long, device=device)
    proc = AutoDecoLogitsProcessor(model, policy)
    pad = model.generation_config.pad_token_id
    if pad is None:
        pad = getattr(model.config, "pad_token_id", None)
    if pad is None:
        eos = model.generation_config.eos_token_id or getattr(model.config, "eos_token_id", None)
        pad = eos[0] if isinstance(eos, (list, tuple)) else eos
    stop = list(getattr(args, "stop", None) or [])
    if stop and tokenizer is None:
        raise AutoDecoError(f"{model_path}: --stop needs the model's tokenizer, which was not found")
    extra = {"stop_strings": stop, "tokenizer": tokenizer} if stop else {}
    torch.manual_seed(int(args.seed))
    with torch.no_grad():
        model.generate(
            input_ids,
            attention_mask=torch.ones_like(input_ids),
            do_sample=True,
            max_new_tokens=int(args.max_new_tokens),
            logits_processor=[proc],
            pad_token_id=pad,
            **extra,
        )
    result = proc.trace.results(None)[0]
    result.prompt_ids = ids
    pieces = None
    if tokenizer is not None:
        result.text = tokenizer.decode(result.token_ids, skip_special_tokens=True)
        pieces = [tokenizer.decode([t], skip_special_tokens=True) for t in result.token_ids]
    if stop and result.text is not None:  # like the llama.cpp engine: the text ends before the stop string
        from autodeco_samplers.core.text_stream import StopTextStream

        text = StopTextStream(stop)
        text.push(result.text)
        if text.stopped:
            result.text = text.text
            result.finish_reason = "stop"
    return result, pieces


def _llama_cpp(args: Any, policy: DecodingPolicy) -> Tuple[GenerationResult, List[str]]:
    """``autodeco generate --engine llama-cpp --model model.gguf --heads heads.gguf ...``.

    ``args.threads`` (``auto``: llama.cpp's choice) sets ``n_threads``. Text policy (the same
    for every engine, see :class:`~autodeco_samplers.core.interfaces.GenerationResult`): ``text``
    and ``pieces`` never show special (control) tokens; ``token_ids`` and ``steps`` hold
    every generated token, the end-of-generation token included.
    """
    from autodeco_samplers.adapters.llama_cpp import AutoDecoLlama

    if not args.heads:
        raise AutoDecoError("--engine llama-cpp needs --heads (a sidecar from `autodeco export-heads`, or any heads checkpoint)")
    model_path = Path(args.model)
    if model_path.is_dir() or model_path.suffix.lower() != ".gguf":
        raise CheckpointError(
            f"{model_path}: --engine llama-cpp needs a model .gguf file (convert a tiny model with `autodeco convert-gguf`)"
        )
    n_threads = getattr(args, "threads", None)
    threads = {} if n_threads in (None, "auto") else {"n_threads": int(n_threads)}
    gen = AutoDecoLlama(
        model_path,
        args.heads,
        policy=policy,
        seed=args.seed,
        n_ctx=args.n_ctx,
        f32_kv_cache=bool(getattr(args, "f32_kv_cache", False)),
        **threads,
    )
    prompt = args.prompt if getattr(args, "prompt", None) is not None else list(args.prompt_ids)
    stream = gen.stream(prompt, max_new_tokens=args.max_new_tokens, seed=args.seed,
                        stop=getattr(args, "stop", None))
    pieces = [tok.piece for tok in stream]
    return stream.result, pieces


_RUNNERS: Dict[str, Callable[[Any, DecodingPolicy], Tuple[GenerationResult, Optional[List[str]]]]] = {
    "transformers": _transformers,
    "llama-cpp": _llama_cpp,
}
