"""Every architecture an official AutoDeco checkpoint uses, and the final logit transforms.

Tiny seeded random models of Llama, Qwen2, Qwen3, Qwen3-MoE and GPT-OSS (the bases of the
released checkpoints) plus Gemma2 (``final_logit_softcapping``), Cohere (``logit_scale``) and
Granite (``logits_scaling``). The heads read the model's own logits of the step; the
transformers adapter rebuilds them from ``lm_head``'s output (``_model_logits``), which is
checked here against the logits the model itself returns, and shown to matter.
(``tests/adapters/transformers/test_transformers_adapter.py`` runs ``generate`` on each of them against the
reference; the conformance suite's end-to-end level runs them too.)
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from _hf_util import assert_same_distribution, reference_steps

from autodeco_samplers import load_heads
from autodeco_samplers.adapters.transformers import AutoDecoLogitsProcessor, attach, get_attachment
from autodeco_samplers.core.policy import DecodingPolicy
from autodeco_samplers.models.tiny_models import (
    LOGIT_TRANSFORM_ARCHITECTURES,
    OFFICIAL_ARCHITECTURES,
    build_tiny_model,
    save_tiny_heads,
)

HIDDEN = 64
ARCHS = OFFICIAL_ARCHITECTURES + LOGIT_TRANSFORM_ARCHITECTURES


@pytest.fixture(scope="module")
def heads_dir(tmp_path_factory):
    return save_tiny_heads(tmp_path_factory.mktemp("heads"), HIDDEN, seed=6)


def _lm_head_output(model, ids):
    """(raw lm_head output of the last position, the model's own logits there)."""
    seen = {}
    hook = model.get_output_embeddings().register_forward_hook(lambda m, a, out: seen.__setitem__("raw", out))
    try:
        with torch.no_grad():
            out = model(ids)
    finally:
        hook.remove()
    return seen["raw"][:, -1], out.logits[:, -1]


@pytest.mark.parametrize("arch", ARCHS)
def test_model_logits_equal_the_models_own_output(arch, heads_dir):
    model = build_tiny_model(arch, seed=0, vocab_size=320, hidden_size=HIDDEN)
    ids = torch.tensor([[5, 60, 7, 80, 9, 100, 11]])
    raw, own = _lm_head_output(model, ids)
    with attach(model, heads_dir) as att:
        rebuilt = att._model_logits(raw, torch.zeros_like(own))
    torch.testing.assert_close(rebuilt, own, rtol=1e-6, atol=1e-6)
    if arch in LOGIT_TRANSFORM_ARCHITECTURES:  # the transform is real here, not an identity
        assert (raw - own).abs().max() > 0.1


@pytest.mark.parametrize("arch", LOGIT_TRANSFORM_ARCHITECTURES)
def test_the_heads_see_the_transformed_logits(arch, heads_dir):
    """With the transform skipped (raw ``lm_head`` output), P moves measurably: the reference
    comparison in the generate tests would catch an adapter that forgot it."""
    model = build_tiny_model(arch, seed=0, vocab_size=320, hidden_size=HIDDEN)
    ids = torch.tensor([[5, 60, 7, 80, 9, 100, 11]])
    seen = {}
    hook = model.get_output_embeddings().register_forward_hook(lambda m, a, out: seen.__setitem__("raw", out))
    with torch.no_grad():
        out = model(ids, output_hidden_states=True)
    hook.remove()
    heads = load_heads(heads_dir)
    h = out.hidden_states[-1][0].numpy()
    _, P_own = heads.predict(h, out.logits[0].numpy())
    _, P_raw = heads.predict(h, seen["raw"][0].numpy())
    assert np.abs(P_own - P_raw).max() > 1e-2  # 100x the generate tests' tolerance on P


@pytest.mark.parametrize("arch", ARCHS)
def test_generate_on_every_architecture_matches_the_reference(arch, heads_dir, one_torch_thread):
    model = build_tiny_model(arch, seed=1, vocab_size=320, hidden_size=HIDDEN)
    attach(model, heads_dir)
    ids = torch.tensor([[5, 60, 7, 80, 9], [2, 2, 11, 12, 13]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]])
    proc = AutoDecoLogitsProcessor(model)
    n = 5
    torch.manual_seed(0)
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=mask, do_sample=True, max_new_tokens=n, eos_token_id=None,
                             pad_token_id=2, logits_processor=[proc], output_scores=True, return_dict_in_generate=True)
    full_mask = torch.cat([mask, torch.ones(2, n, dtype=torch.long)], 1)
    ref = reference_steps(model, load_heads(heads_dir), DecodingPolicy(), out.sequences, full_mask, ids.shape[1], n)
    for s, (probs, T_pred, P_pred, T, P, logits) in enumerate(ref):
        np.testing.assert_allclose(proc.trace.T_pred[:, s].numpy(), T_pred, atol=1e-4)
        np.testing.assert_allclose(proc.trace.P_pred[:, s].numpy(), P_pred, atol=1e-4)
        got = torch.softmax(out.scores[s].double(), -1).numpy()
        for b in range(2):
            assert_same_distribution(got[b], probs[b], logits[b], float(T[b]), float(P[b]))
    get_attachment(model).detach()


@pytest.mark.parametrize("V", [4096, 32000])
def test_generate_at_real_vocab_sizes_matches_the_reference_on_both_nucleus_paths(V, heads_dir, one_torch_thread):
    """V > 512: the step's candidate path proves narrow nuclei and the threshold search takes
    the rest. The request temperature 3 widens some nuclei past the candidate set (so the
    threshold search must run), temperature 1 keeps others narrow; every step of both runs
    equals the reference (a full sort in float64)."""
    from autodeco_samplers.core import torch_nucleus as N

    model = build_tiny_model("qwen2", seed=2, vocab_size=V, hidden_size=HIDDEN)
    ids = torch.tensor([[5, 60, 7, 80, 9, 100]])
    widths = []
    for temperature in (0.1, 3.0):
        attach(model, heads_dir)
        proc = AutoDecoLogitsProcessor(model)
        torch.manual_seed(7)
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True, max_new_tokens=6,
                                 eos_token_id=None, pad_token_id=0, temperature=temperature, logits_processor=[proc],
                                 output_scores=True, return_dict_in_generate=True)
        ref = reference_steps(model, load_heads(heads_dir), DecodingPolicy(temperature=temperature), out.sequences,
                              torch.ones_like(out.sequences), ids.shape[1], 6)
        get_attachment(model).detach()
        for s, (probs, _, _, T, P, logits) in enumerate(ref):
            got = torch.softmax(out.scores[s][0].double(), -1).numpy()
            widths.append(int((got > 0).sum()))
            assert_same_distribution(got, probs[0], logits[0], float(T[0]), float(P[0]), atol=1e-5)
    assert max(widths) > N.CANDIDATES, f"no nucleus wider than the candidate set: {widths}"
    assert min(widths) < N.CANDIDATES, f"no nucleus the candidates can prove: {widths}"
