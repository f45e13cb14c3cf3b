"""The llama.cpp adapter on real llama.cpp (no mocks), checked against transformers + reference.

The reference side never uses the adapter: the token path the adapter generated is fed through
the transformers model (teacher forcing, ``output_hidden_states=True``), the NumPy heads
predict (T, P) from *those* hidden states and logits, and
:func:`autodeco_samplers.core.reference.next_token_distribution` gives the distribution.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("llama_cpp")
pytest.importorskip("transformers")

from _hf_util import assert_same_distribution, g_test_pvalue
from _llama_util import assets, hf_forward, hf_tokenizer, llama, step_after

from autodeco_samplers import DecodingPolicy, load_heads
from autodeco_samplers.adapters.llama_cpp import (
    NEUTRAL_SAMPLING_KWARGS,
    AutoDecoLlama,
    AutoDecoLlamaProcessor,
    check_model_gguf,
)
from autodeco_samplers.frontends.cli import main as cli_main
from autodeco_samplers.core.errors import CheckpointError, ShapeError
from autodeco_samplers.core.reference import next_token_distribution
from autodeco_samplers.core.step import numpy_step_sample

PROMPT = "The quick brown fox"


@pytest.fixture(scope="module")
def gen():
    return AutoDecoLlama(llama(), load_heads(assets()["heads_gguf"]), seed=0)


def _engine_steps(gen, prompt_ids, n, policy):
    """Run the adapter's own loop and keep each step's engine-side distribution (``on_step``)."""
    records = []
    res = gen.generate(list(prompt_ids), max_new_tokens=n, seed=0, policy=policy, stop_at_eos=False,
                       on_step=records.append)
    assert len(records) == len(res.token_ids) == n
    out = [(r.step.dense(gen.n_vocab)[0], float(r.step.T_pred[0]), float(r.step.P_pred[0]), float(r.step.T[0]),
            float(r.step.P[0])) for r in records]
    return out, res.token_ids


@pytest.mark.parametrize("policy", [DecodingPolicy(), DecodingPolicy(temperature=0.7, top_p=1.3)])
def test_teacher_forced_T_P_and_distribution_match_transformers(gen, policy):
    prompt_ids = hf_tokenizer().encode(PROMPT)
    steps, tokens = _engine_steps(gen, prompt_ids, 12, policy)
    hidden, logits = hf_forward(prompt_ids + tokens)
    heads = load_heads(assets()["heads_dir"])
    for s, (dense, T_pred, P_pred, T, P) in enumerate(steps):
        t = len(prompt_ids) + s - 1
        rT, rP = heads.predict(hidden[t : t + 1].astype(np.float32), logits[t : t + 1].astype(np.float32))
        uT, uP = policy.apply(rT.astype(np.float64), rP.astype(np.float64))
        assert T_pred == pytest.approx(float(rT[0]), rel=1e-4, abs=1e-5)
        assert P_pred == pytest.approx(float(rP[0]), rel=1e-4, abs=1e-5)
        assert T == pytest.approx(float(uT[0]), rel=1e-4, abs=1e-5)
        ref = next_token_distribution(logits[t], float(uT[0]), float(uP[0]))
        assert_same_distribution(dense, ref, logits[t], float(uT[0]), float(uP[0]), atol=1e-4)


def test_generate_reports_a_consistent_trace(gen):
    res = gen.generate(PROMPT, max_new_tokens=10, seed=1)
    assert res.engine == "llama-cpp" and res.finish_reason == "length"
    assert res.prompt_ids == hf_tokenizer().encode(PROMPT)
    assert len(res.token_ids) == len(res.steps) == 10
    assert [s.token_id for s in res.steps] == res.token_ids
    assert res.text == hf_tokenizer().decode(res.token_ids, skip_special_tokens=True)
    d = res.to_dict()
    assert set(d) == {"engine", "prompt_ids", "token_ids", "text", "finish_reason", "steps"}
    assert set(d["steps"][0]) == {"token_id", "T_pred", "P_pred", "T", "P"}


def test_streaming_yields_the_same_tokens_with_T_and_P(gen):
    stream = gen.stream(PROMPT, max_new_tokens=6, seed=5)
    items = list(stream)
    assert [i.token_id for i in items] == stream.result.token_ids
    assert [i.step for i in items] == stream.result.steps
    assert "".join(i.piece for i in items) == stream.result.text
    assert "".join(i.released for i in items) == stream.result.text


def test_on_step_records_what_each_token_was_drawn_from(gen):
    """The public recording hook: per token, the hidden state and logits it was drawn from (the
    context's outputs while the stream is paused at it), and the core step's result on them."""
    records = []
    stream = gen.stream(PROMPT, max_new_tokens=5, seed=2, on_step=records.append)
    for item in stream:
        rec = records[-1]
        hidden, logits = gen.last_outputs()
        assert rec.index == item.index and int(rec.step.token_ids[0]) == item.token_id
        np.testing.assert_array_equal(rec.hidden, hidden)
        np.testing.assert_array_equal(rec.logits, logits)
        ids, probs = rec.step.rows[0]
        assert item.token_id in ids.tolist() and probs.sum() == pytest.approx(1.0, abs=1e-5)
    assert [r.step.row(0) for r in records] == stream.result.steps
    assert len(records) == 5


def test_seeded_reproducibility_and_exact_path(gen):
    a = gen.generate(PROMPT, max_new_tokens=12, seed=3)
    b = gen.generate(PROMPT, max_new_tokens=12, seed=3)
    c = gen.generate(PROMPT, max_new_tokens=12, seed=4)
    assert a.token_ids == b.token_ids and a.steps == b.steps
    assert a.token_ids != c.token_ids
    exact = AutoDecoLlama(gen.llm, gen.heads, exact=True)  # the step with the reference's full sort
    assert exact.generate(PROMPT, max_new_tokens=12, seed=3).token_ids == a.token_ids
    ids = gen.generate(hf_tokenizer().encode(PROMPT), max_new_tokens=12, seed=3)
    assert ids.token_ids == a.token_ids


def test_draws_follow_the_distribution(gen):
    """2000 one-token generations with fixed seeds against the canonical first-step distribution."""
    prompt_ids = hf_tokenizer().encode("Sampling is a choice")
    hidden, logits = hf_forward(prompt_ids)
    T, P = gen.heads.predict(hidden[-1:].astype(np.float32), logits[-1:].astype(np.float32))
    probs = next_token_distribution(logits[-1], float(T[0]), float(P[0]))
    assert (probs > 0).sum() >= 3, "test needs a non-trivial nucleus"
    rng = np.random.default_rng(123)
    counts = np.zeros(gen.n_vocab)
    first = step_after(gen, prompt_ids)  # the engine's hidden state and logits, and the adapter's per-token sampler
    for _ in range(2000):
        counts[int(numpy_step_sample(first.hidden[None], first.logits[None], gen.heads, gen.policy, rng).token_ids[0])] += 1
    assert counts[probs == 0].sum() == 0
    assert g_test_pvalue(counts, probs) > 1e-3
    # and through the public API (one prefill per draw), fewer draws
    counts2 = np.zeros(gen.n_vocab)
    for seed in range(300):
        counts2[gen.generate(prompt_ids, max_new_tokens=1, seed=seed).token_ids[0]] += 1
    assert counts2[probs == 0].sum() == 0
    assert g_test_pvalue(counts2, probs) > 1e-3


def test_stop_conditions(gen, tmp_path):
    greedy = DecodingPolicy(temperature=0.0)
    base = gen.generate(PROMPT, max_new_tokens=10, policy=greedy)
    assert base.finish_reason == "length" and all(s.T == 0 for s in base.steps)
    # max tokens
    assert len(gen.generate(PROMPT, max_new_tokens=3, policy=greedy).token_ids) == 3
    assert gen.generate(PROMPT, max_new_tokens=0).token_ids == []
    # stop string: cut the text before it, keep the token that completed it, stop there
    text = base.text
    assert len(text) >= 6
    stop = text[len(text) // 2 : len(text) // 2 + 2]
    stream = gen.stream(PROMPT, max_new_tokens=10, policy=greedy, stop=[stop, "never-there"])
    items = list(stream)
    res = stream.result
    assert res.finish_reason == "stop"
    assert res.text == text[: text.find(stop)]
    assert res.token_ids == base.token_ids[: len(res.token_ids)] and len(res.token_ids) < 10
    before_last = "".join(i.piece for i in items[:-1])
    assert stop not in before_last and stop in before_last + items[-1].piece
    # streaming-safe text: joins to the result and never shows any part of the stop string
    assert "".join(i.released for i in items) == res.text
    # a stop string that is never completed: its prefixes are held back, then released
    tail = gen.stream(PROMPT, max_new_tokens=10, policy=greedy, stop=[text[-2:] + "\x00never"])
    items = list(tail)
    assert tail.result.finish_reason == "length" and tail.result.text == text
    assert items[-1].released.endswith(text[-2:])  # held back until the stream ended
    assert "".join(i.released for i in items) == text
    # EOS: the same model, converted with the 5th greedy token declared as EOS
    eos = base.token_ids[4]
    if eos in base.token_ids[:4]:
        pytest.skip("greedy path repeats the chosen token")
    folder = tmp_path / "model"
    shutil.copytree(assets()["model_dir"], folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["eos_token_id"] = eos
    (folder / "config.json").write_text(json.dumps(cfg))
    from autodeco_samplers.models.gguf_convert import convert_llama_to_gguf

    path = convert_llama_to_gguf(folder, tmp_path / "eos.gguf")
    g2 = AutoDecoLlama(path, gen.heads, f32_kv_cache=True, n_ctx=128)
    res = g2.generate(PROMPT, max_new_tokens=10, policy=greedy)
    assert res.finish_reason == "eos" and res.token_ids == base.token_ids[:5]
    assert res.text == hf_tokenizer().decode(base.token_ids[:4])


def test_full_context_ends_with_length():
    from autodeco_samplers.adapters.llama_cpp import load_llama

    small = AutoDecoLlama(load_llama(assets()["gguf_f32"], n_ctx=16, n_threads=2), load_heads(assets()["heads_gguf"]))
    n_ctx = small.llm.n_ctx()  # llama.cpp rounds the context up (256 here)
    prompt = [5 + i % 300 for i in range(n_ctx - 6)]
    res = small.generate(prompt, max_new_tokens=100, seed=0, stop_at_eos=False)
    assert res.finish_reason == "length" and len(res.token_ids) == n_ctx - len(prompt) + 1


def test_hidden_size_mismatch_is_rejected_at_load(tmp_path):
    from autodeco_samplers.models.tiny_models import save_tiny_heads

    small = save_tiny_heads(tmp_path / "h32", 32, seed=0)
    with pytest.raises(ShapeError, match="hidden-size mismatch.*64.*32"):
        AutoDecoLlama(llama(), small)
    with pytest.raises(ShapeError, match="hidden-size mismatch"):
        AutoDecoLlamaProcessor(llama(), load_heads(small))


def test_model_file_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no such file"):
        check_model_gguf(tmp_path / "missing.gguf")
    with pytest.raises(CheckpointError, match="heads sidecar, not a model"):
        check_model_gguf(assets()["heads_gguf"])
    (tmp_path / "junk.gguf").write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError, match="not a GGUF"):
        check_model_gguf(tmp_path / "junk.gguf")
    data = assets()["gguf_f32"].read_bytes()
    (tmp_path / "cut.gguf").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        check_model_gguf(tmp_path / "cut.gguf")
    from autodeco_samplers.heads.io.gguf_sidecar import scan_gguf_header

    header_end = min(start for _, start, _ in scan_gguf_header(assets()["gguf_f32"]).tensors)
    for n in np.linspace(0, header_end - 1, 60).astype(int).tolist() + [len(data) - 1]:
        (tmp_path / "cut.gguf").write_bytes(data[:n])
        with pytest.raises(CheckpointError):
            check_model_gguf(tmp_path / "cut.gguf")
    import gguf

    w = gguf.GGUFWriter(str(tmp_path / "novocab.gguf"), "llama")
    w.add_tensor("token_embd.weight", np.zeros((4, 8), np.float32))
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
    with pytest.raises(CheckpointError, match="no tokenizer vocabulary"):
        check_model_gguf(tmp_path / "novocab.gguf")


def test_bad_files_never_reach_llama_cpp_in_a_subprocess(tmp_path):
    """Loading through the public API in a child process: a clean error and exit code 1 from
    the CLI, never an abort (which would give a negative return code)."""
    data = assets()["gguf_f32"].read_bytes()
    (tmp_path / "cut.gguf").write_bytes(data[: len(data) - 1000])
    cases = [tmp_path / "cut.gguf", assets()["heads_gguf"], tmp_path / "absent.gguf"]
    for model in cases:
        proc = subprocess.run(
            [sys.executable, "-m", "autodeco_samplers", "generate", "--engine", "llama-cpp", "--model", str(model),
             "--heads", str(assets()["heads_gguf"]), "--prompt", "hi"],
            capture_output=True, text=True,
        )
        assert proc.returncode == 1, (model, proc.returncode, proc.stderr[-500:])
        assert "error" in proc.stderr


def test_logits_processor_form(gen):
    from llama_cpp import LogitsProcessorList

    llm = llama()
    proc = AutoDecoLlamaProcessor(llm, gen.heads)
    out = llm.create_completion(PROMPT, max_tokens=5, seed=7, logits_processor=LogitsProcessorList([proc]),
                                **NEUTRAL_SAMPLING_KWARGS)
    assert len(proc.steps) == out["usage"]["completion_tokens"] >= 1
    first = gen.generate(PROMPT, max_new_tokens=1, seed=0).steps[0]
    assert proc.steps[0].T_pred == pytest.approx(first.T_pred, rel=1e-5)
    assert proc.steps[0].P_pred == pytest.approx(first.P_pred, rel=1e-5)
    # the processor's output logits have the canonical distribution as their softmax; it reads
    # the hidden state from the context, so run it while a stream is paused at its first token
    records = []
    stream = gen.stream(hf_tokenizer().encode(PROMPT), max_new_tokens=2, seed=0, on_step=records.append)
    next(stream)
    ids, probs = records[0].step.rows[0]
    mod = proc(np.zeros(0, np.intc), records[0].logits.copy())
    stream.close()
    soft = np.exp(mod - mod.max())
    soft /= soft.sum()
    np.testing.assert_allclose(soft[ids], probs, rtol=1e-5)
    assert soft.sum() - soft[ids].sum() == 0


def test_logits_processor_draws_follow_the_canonical_distribution(gen):
    """Through llama-cpp-python's own chain with NEUTRAL_SAMPLING_KWARGS: the first token of
    400 seeded completions against the canonical distribution (G test, fixed seeds)."""
    from llama_cpp import LogitsProcessorList

    llm = llama()
    prompt = "Sampling is a choice"
    proc = AutoDecoLlamaProcessor(llm, gen.heads)
    ids, probs = step_after(gen, gen.tokenize(prompt)).step.rows[0]
    assert ids.size >= 3, "test needs a non-trivial nucleus"
    dense = np.zeros(gen.n_vocab)
    dense[ids] = probs
    llm.reset()
    proc = AutoDecoLlamaProcessor(llm, gen.heads)
    kw = dict(NEUTRAL_SAMPLING_KWARGS)
    kw["temp"] = kw.pop("temperature")  # Llama.generate spells it temp; create_completion maps it
    counts = np.zeros(gen.n_vocab)
    prompt_ids = gen.tokenize(prompt)
    for seed in range(400):
        llm.set_seed(seed)
        tok = next(iter(llm.generate(prompt_ids, logits_processor=LogitsProcessorList([proc]), **kw)))
        counts[int(tok)] += 1
    assert counts[dense == 0].sum() == 0
    assert g_test_pvalue(counts, dense) > 1e-3


def test_cli_generate_json(capsys):
    a = assets()
    argv = ["generate", "--engine", "llama-cpp", "--model", str(a["gguf_f32"]), "--heads", str(a["heads_gguf"]),
            "--prompt", PROMPT, "--max-new-tokens", "5", "--seed", "2", "--json"]
    assert cli_main(argv) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["engine"] == "llama-cpp" and len(first["token_ids"]) == 5
    assert set(first["steps"][0]) == {"token_id", "T_pred", "P_pred", "T", "P"}
    assert cli_main(argv) == 0
    assert json.loads(capsys.readouterr().out) == first
    # human view, heads given as a folder, prompt as ids
    assert cli_main(["generate", "--engine", "llama-cpp", "--model", str(a["gguf_f32"]), "--heads",
                     str(a["heads_dir"]), "--prompt-ids", "5,6,7", "--max-new-tokens", "3"]) == 0
    assert "T_pred" in capsys.readouterr().out
    assert cli_main(["generate", "--engine", "llama-cpp", "--model", str(a["gguf_f32"]), "--prompt", "x"]) == 2  # usage
    assert "--heads is required" in capsys.readouterr().err
    assert cli_main(["generate", "--engine", "llama-cpp", "--model", str(a["model_dir"]), "--heads",
                     str(a["heads_gguf"]), "--prompt", "x"]) == 1  # a folder is not a model .gguf


def test_adapter_never_imports_torch():
    a = assets()
    code = (
        "import sys\n"
        "from autodeco_samplers.adapters.llama_cpp import AutoDecoLlama\n"
        f"g = AutoDecoLlama({str(a['gguf_f32'])!r}, {str(a['heads_gguf'])!r}, seed=0, n_ctx=64)\n"
        "r = g.generate('hello', max_new_tokens=3)\n"
        "assert len(r.token_ids) == 3\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_conformance_suite_all_levels(tmp_path):
    """The project's conformance suite against this adapter: kernel (Hypothesis), sampling
    (G test of the real sampler) and end-to-end (real llama.cpp vs transformers)."""
    from autodeco_samplers.conformance.engines.llama_cpp import LlamaCppEngine
    from autodeco_samplers.conformance.runner import run_end_to_end, run_kernel, run_sampling

    engine = LlamaCppEngine()
    assert engine.availability() == (True, "")
    for result in (run_kernel(engine, examples=60), run_sampling(engine), run_end_to_end(engine, workdir=tmp_path)):
        assert result.verdict == "pass", result
