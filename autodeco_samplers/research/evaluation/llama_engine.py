"""The llama.cpp engine of the task evaluation: every answer generated through the llama.cpp
adapter's public API (:class:`~autodeco_samplers.adapters.llama_cpp.AutoDecoLlama`), one
``generate`` call per sample with a seed of its own, and handed to the same scoring as the
transformers engine (:func:`~autodeco_samplers.research.evaluation.chat.evaluate_on_engine`).

Strategies: ``autodeco`` is the adapter's default policy; a static ``(T, P)`` (greedy,
default, the grid, mean-static) is the policy with ``fixed_temperature = T`` and
``fixed_top_p = P`` (the canonical rule with the heads' predictions replaced; ``T = 0`` is
greedy). The baselines (min-p, top-nσ, dynamic temperature, EDT) are not decoding rules of the
adapter, so this engine leaves them out and the report names them under ``left_out``.

Seeds: sample ``r`` of a (strategy, seed) run (its ``r``-th row: items in order, each item's
samples in turn) draws with ``numpy.random.default_rng(sample_seed(seed, r))``.
"""

from __future__ import annotations

import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from autodeco_samplers.research.evaluation.decode import Generated
from autodeco_samplers.research.evaluation.strategies import Strategy

__all__ = ["LlamaCppEngine", "sample_seed", "policy_of"]

LEFT_OUT_BASELINE = "not a decoding rule of the llama.cpp adapter (AutoDecoLlama draws with the canonical rule only)"


def sample_seed(seed: int, row: int) -> int:
    """The seed of row ``row`` of a run with evaluation seed ``seed``: the first 64-bit word
    of ``numpy.random.SeedSequence([seed mod 2**32, row])``."""
    return int(np.random.SeedSequence([int(seed) % 2**32, int(row)]).generate_state(1, np.uint64)[0])


def policy_of(st: Strategy):
    """The adapter policy of a strategy (module docstring); None for a baseline."""
    from autodeco_samplers.core.policy import DecodingPolicy

    if st.kind == "autodeco":
        return DecodingPolicy()
    if st.kind == "static":
        return DecodingPolicy(fixed_temperature=float(st.temperature), fixed_top_p=float(st.top_p))
    return None


class LlamaCppEngine:
    """Samples with an :class:`AutoDecoLlama` (module docstring). ``prompt_ids``: per item the
    token ids fed to the model (the llama.cpp tokenizer's; see :func:`prompt_ids_for`)."""

    name = "llama-cpp"

    def __init__(self, gen, prompt_ids: Sequence[Sequence[int]], *, say: Callable[[str], None] = lambda s: None) -> None:
        self.gen, self.prompt_ids, self.say = gen, [list(p) for p in prompt_ids], say

    def supports(self, st: Strategy) -> Optional[str]:
        """None when this engine runs ``st``, else why it is left out."""
        return None if policy_of(st) is not None else LEFT_OUT_BASELINE

    def texts(self, gen: Generated) -> List[str]:  # pragma: no cover - every Generated here carries its texts
        raise AssertionError("llama.cpp runs carry their texts")

    def run(self, st: Strategy, rows: Sequence[int], seed: int, max_new_tokens: int) -> Generated:
        """One (strategy, seed) run: every row's answer, its per-token T/P used and predicted."""
        policy = policy_of(st)
        out = Generated([], [], [], [], [], [], texts=[])
        for r, i in enumerate(rows):
            res = self.gen.generate(self.prompt_ids[i], max_new_tokens=max_new_tokens, seed=sample_seed(seed, r),
                                    policy=policy)
            out.token_ids.append(list(res.token_ids))
            out.ended.append(res.finish_reason == "eos")
            out.texts.append(res.text or "")
            for key in ("T", "P", "T_pred", "P_pred"):
                getattr(out, key).append([float(getattr(s, key)) for s in res.steps])
        return out

    def generate(self, run, group: Sequence[Strategy], max_new_tokens: int) -> Dict[Tuple[int, int], Generated]:
        """Every (strategy index, seed) run of ``group`` (the interface of
        :class:`~autodeco_samplers.research.evaluation.chat.TransformersEngine`)."""
        results: Dict[Tuple[int, int], Generated] = {}
        for k, st in enumerate(group):
            for seed in run.seeds_of(st):
                ts = time.perf_counter()
                results[(k, seed)] = self.run(st, run.rows_of(st), seed, max_new_tokens)
                self.say(f"{st.name} seed {seed}: {len(run.rows_of(st))} answers in {time.perf_counter() - ts:.1f} s")
        return results


def prompt_ids_for(gen, items) -> List[List[int]]:
    """Per item the token ids for llama.cpp: a ``prompt`` through the model's tokenizer (BOS
    added as the model does); ``messages`` through the GGUF's chat template with the
    generation prompt (an error naming the line when the model has none)."""
    from autodeco_samplers.research.evaluation.user_tasks import TaskFileError

    out = []
    for it in items:
        if getattr(it, "messages", None) is not None:
            template = (getattr(gen.llm, "metadata", None) or {}).get("tokenizer.chat_template")
            if not template:
                raise TaskFileError(f"line {it.line}: field 'messages': this GGUF has no chat template; use 'prompt'")
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            fmt = Jinja2ChatFormatter(template, eos_token=gen.llm.detokenize([gen.llm.token_eos()]).decode("utf-8", "replace"),
                                      bos_token=gen.llm.detokenize([gen.llm.token_bos()]).decode("utf-8", "replace"),
                                      add_generation_prompt=True)
            text = fmt(messages=list(it.messages)).prompt
            out.append(gen.tokenize(text, add_bos=False))
        else:
            out.append(gen.tokenize(it.prompt))
    return out
