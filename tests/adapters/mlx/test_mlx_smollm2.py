"""SmolLM2-135M-Instruct (the float32 folder `autodeco smollm2 prepare` makes, with its shipped
heads) on mlx-lm: every step's hidden state, T/P and distribution against a teacher-forced
transformers forward of the same path and the reference rule."""

from __future__ import annotations

import numpy as np
import pytest

mx = pytest.importorskip("mlx.core")
mlx_lm = pytest.importorskip("mlx_lm")
torch = pytest.importorskip("torch")

from _hf_util import assert_same_distribution

from autodeco_samplers import load_heads
from autodeco_samplers.adapters.mlx import generate, load
from autodeco_samplers.core.reference import next_token_distribution
from autodeco_samplers.models import smollm2

pytestmark = pytest.mark.slow

if not smollm2.is_installed():
    pytest.skip(f"SmolLM2 not installed ({smollm2.INSTALL_COMMAND})", allow_module_level=True)


def test_smollm2_steps_are_the_reference_on_the_transformers_forward():
    folder = smollm2.hf_path()
    heads = load_heads(smollm2.heads_path())
    recs = []
    # load() passes the rope_theta mlx-lm misreads in transformers 5 configs (adapters/mlx/config.py)
    model, tokenizer, autodeco = load(folder, heads, seed=0, on_step=lambda h, lp, st: recs.append((h, lp, st)))
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "Name an animal."}], add_generation_prompt=True)
    result = generate(autodeco, tokenizer, prompt, max_tokens=12, seed=0)
    autodeco.detach()
    assert result.token_ids and result.text and result.text.strip()
    hf, _ = smollm2.load_hf(folder)
    ids = list(prompt) + result.token_ids
    with torch.no_grad():
        out = hf(torch.tensor([ids]), output_hidden_states=True)
    n = len(prompt)
    for s, (h, lp, st) in enumerate(recs[: len(result.token_ids)]):
        h_ref = out.hidden_states[-1][0, n + s - 1].numpy()
        l_ref = out.logits[0, n + s - 1].numpy()
        np.testing.assert_allclose(h[0], h_ref, rtol=1e-3, atol=1e-3)
        T_ref, P_ref = heads.predict(h_ref[None], l_ref[None])
        np.testing.assert_allclose(st.T_pred, T_ref, atol=1e-4)
        np.testing.assert_allclose(st.P_pred, P_ref, atol=1e-4)
        ref = next_token_distribution(lp, st.T, st.P)[0]
        assert_same_distribution(st.dense(lp.shape[1])[0], ref, lp[0], float(st.T[0]), float(st.P[0]))
