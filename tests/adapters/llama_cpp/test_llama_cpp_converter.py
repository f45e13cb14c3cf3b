"""GGUFs made by llama.cpp's *own* converter run through the llama.cpp adapter like the
transformers adapter runs the HF model.

Users bring GGUFs made by ``convert_hf_to_gguf.py`` (mostly Qwen2/Qwen3 bases, tied or untied
embeddings), not by this project's converter. Here tiny seeded HF Llama, Qwen2 and Qwen3 models,
each with tied and untied embeddings, are converted by the converter of the installed
llama-cpp-python's source distribution (``tests/_llama_cpp_source.py``; skipped, with the
reason, only where that converter cannot be had). The transformers adapter generates with
``model.generate``; the llama.cpp adapter is then driven along the *same tokens*; per step the
two adapters' final hidden state, predicted and used T and P, and next-token distribution must
agree.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("llama_cpp")

from _hf_util import assert_same_distribution
from _llama_cpp_source import convert, converter_source
from _llama_util import step_after

from autodeco_samplers import DecodingPolicy, load_heads

CASES = [(arch, tied) for arch in ("llama", "qwen2", "qwen3") for tied in (False, True)]
HIDDEN = 64
STEPS = 10
PROMPT = "The quick brown fox"

# Tolerances, from measurements on these models (max over all six, 10 steps, 2 policies):
# * f32 GGUF + f32 KV cache: |dh| / max|h| 3.3e-7, |dT|, |dP| 6.6e-7, probabilities 6.8e-7:
#   float32 noise of two implementations; the bounds leave a 40x-90x margin, and the
#   nucleus boundary allowance is the conformance suite's eps (1e-5).
# * f32 GGUF + llama.cpp's default f16 KV cache: |dh| / max|h| 5.1e-4, |dT|, |dP| 7.2e-4,
#   probabilities 8.2e-4 (the cache rounds K and V to 11 significant bits); bounds 2x-3x
#   that; prefix sums then move by up to ~1e-3, so tokens within 2e-3 of P may fall either side.
TOL = {
    True: dict(hidden=3e-5, head=3e-5, dist=5e-5, eps=1e-5),  # f32 KV cache
    False: dict(hidden=1.5e-3, head=1.5e-3, dist=2e-3, eps=2e-3),  # default f16 KV cache
}


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    root, why = converter_source()
    if root is None:
        pytest.skip(f"llama.cpp's convert_hf_to_gguf.py cannot run here: {why}")
    from autodeco_samplers.models.tiny_models import save_tiny_heads, save_tiny_model

    work = tmp_path_factory.mktemp("llama-cpp-converter")
    jobs = []
    for arch, tied in CASES:
        folder = save_tiny_model(work / f"{arch}-{'tied' if tied else 'untied'}", arch, seed=3, hidden_size=HIDDEN,
                                 tie_word_embeddings=tied)
        jobs.append((folder, folder.with_suffix(".gguf"), "f32"))
    convert(jobs)
    heads = save_tiny_heads(work / "heads", HIDDEN, seed=4)
    return {case: (folder, gguf) for case, (folder, gguf, _) in zip(CASES, jobs)}, heads


def _hf_run(folder, heads_dir, policy, seed=0):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from autodeco_samplers.adapters.transformers import AutoDecoLogitsProcessor, attach

    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    prompt = tok.encode(PROMPT)
    with attach(model, heads_dir):
        proc = AutoDecoLogitsProcessor(model, policy)
        torch.manual_seed(seed)
        with torch.no_grad():
            out = model.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                                 do_sample=True, max_new_tokens=STEPS, eos_token_id=None, logits_processor=[proc],
                                 output_scores=True, output_logits=True, output_hidden_states=True,
                                 return_dict_in_generate=True, pad_token_id=tok.pad_token_id)
    steps = []
    for s in range(STEPS):
        steps.append(dict(
            token=int(out.sequences[0, len(prompt) + s]),
            hidden=out.hidden_states[s][-1][0, -1].double().numpy(),
            logits=out.logits[s][0].double().numpy(),
            probs=torch.softmax(out.scores[s][0].double(), -1).numpy(),
            T_pred=float(proc.trace.T_pred[0, s]), P_pred=float(proc.trace.P_pred[0, s]),
            T=float(proc.trace.T[0, s]), P=float(proc.trace.P[0, s]),
        ))
    return prompt, steps


def _llama_run(gguf, heads, prompt, tokens, policy, f32_kv):
    from autodeco_samplers.adapters.llama_cpp import AutoDecoLlama

    gen = AutoDecoLlama(str(gguf), heads, f32_kv_cache=f32_kv, n_ctx=128, n_threads=2)
    steps = []
    for s in range(len(tokens)):  # the adapter's step after each prefix of the forced path
        rec = step_after(gen, list(prompt) + list(tokens[:s]), policy)
        st = rec.step
        steps.append(dict(hidden=rec.hidden.astype(np.float64), logits=rec.logits.astype(np.float64),
                          probs=st.dense(gen.n_vocab)[0], T_pred=float(st.T_pred[0]), P_pred=float(st.P_pred[0]),
                          T=float(st.T[0]), P=float(st.P[0])))
    return steps


@pytest.mark.parametrize("case", CASES, ids=[f"{a}-{'tied' if t else 'untied'}" for a, t in CASES])
def test_llama_cpp_converter_gguf_matches_the_transformers_adapter(converted, case, one_torch_thread):
    files, heads_dir = converted
    folder, gguf = files[case]
    heads = load_heads(heads_dir)
    worst = {kv: dict(hidden=0.0, head=0.0, dist=0.0, kept=0) for kv in (True, False)}
    for policy in (DecodingPolicy(), DecodingPolicy(temperature=0.8, top_p=1.2)):
        prompt, hf = _hf_run(folder, heads_dir, policy)
        for f32_kv in (True, False):
            tol = TOL[f32_kv]
            ll = _llama_run(gguf, heads, prompt, [s["token"] for s in hf], policy, f32_kv)
            w = worst[f32_kv]
            for s, (a, b) in enumerate(zip(hf, ll)):
                where = f"{'f32' if f32_kv else 'f16'} KV cache, step {s}"
                dh = np.abs(a["hidden"] - b["hidden"]).max() / np.abs(a["hidden"]).max()
                dhead = max(abs(a[k] - b[k]) for k in ("T_pred", "P_pred", "T", "P"))
                w["hidden"], w["head"] = max(w["hidden"], dh), max(w["head"], dhead)
                w["kept"] = max(w["kept"], int((a["probs"] > 0).sum()))
                assert dh <= tol["hidden"], f"{where}: hidden states differ by {dh:.3g} (relative)"
                assert dhead <= tol["head"], f"{where}: T/P differ by {dhead:.3g}"
                # the llama.cpp adapter's distribution against the transformers adapter's;
                # supports may differ only on tokens at the nucleus boundary
                assert_same_distribution(b["probs"], a["probs"], b["logits"], b["T"], b["P"], atol=tol["dist"],
                                         eps=tol["eps"])
                w["dist"] = max(w["dist"], float(np.abs(a["probs"] - b["probs"]).max()))
    # the comparison must have covered real nuclei, not one-hot rows only
    assert worst[True]["kept"] >= 3, worst
    for kv, w in worst.items():
        print(f"\n{case} {'f32' if kv else 'f16'} KV: " + ", ".join(f"{k} {v:.3g}" for k, v in w.items()))
