"""Heads from every checkpoint form the core reads, attached to an mlx-lm model: the adapter's
T/P per step equal the NumPy heads of the heads folder on the adapter's own hidden state and
log-probabilities, and the official torch heads (tests/_official.py) agree within float noise."""

from __future__ import annotations

import numpy as np
import pytest

mx = pytest.importorskip("mlx.core")
mlx_lm = pytest.importorskip("mlx_lm")
torch = pytest.importorskip("torch")
pytest.importorskip("gguf")

from _official import OfficialHeads, official_heads_folder, official_merge, official_split

from autodeco_samplers import load_heads
from autodeco_samplers.adapters.mlx import attach, generate
from autodeco_samplers.heads.io.export import export_heads

H = 64


@pytest.fixture(scope="module")
def forms(tmp_path_factory):
    from autodeco_samplers.models.tiny_models import build_tiny_model, build_tokenizer

    root = tmp_path_factory.mktemp("mlx-heads")
    tok = build_tokenizer(512)
    model = build_tiny_model("llama", seed=0, tokenizer=tok, hidden_size=H)
    base = root / "base"
    model.save_pretrained(base, max_shard_size="100KB")  # sharded, with an index, as official bases are
    tok.save_pretrained(base)
    official = OfficialHeads(H, True, seed=0)
    heads_dir = official_heads_folder(root / "heads", base, official.state_dict())
    merged = official_merge(heads_dir, base, root / "merged")
    split = official_split(merged, root / "split")
    export_heads(heads_dir, root / "heads.gguf")
    paths = {"heads folder": heads_dir, "merged folder": merged, "split folder": split,
             "safetensors file": heads_dir / "model.safetensors", "gguf sidecar": root / "heads.gguf"}
    return dict(base=base, official=official, reference=load_heads(heads_dir), paths=paths)


@pytest.mark.parametrize("form", ["heads folder", "merged folder", "split folder", "safetensors file", "gguf sidecar"])
def test_every_checkpoint_form_gives_the_numpy_heads(forms, form):
    model, tokenizer = mlx_lm.load(str(forms["base"]))
    recs = []
    autodeco = attach(model, forms["paths"][form], seed=0, on_step=lambda h, lp, st: recs.append((h, lp, st)))
    result = generate(autodeco, tokenizer, "The quick brown fox", max_tokens=6, seed=0, stop_at_eos=False)
    autodeco.detach()
    assert len(result.token_ids) == 6
    for h, lp, st in recs[:6]:
        T, P = forms["reference"].predict(h, lp)
        assert np.array_equal(st.T_pred, T) and np.array_equal(st.P_pred, P)
        with torch.no_grad():
            T_off, P_off = forms["official"].predict(torch.from_numpy(h), torch.from_numpy(lp))
        np.testing.assert_allclose(st.T_pred, T_off.numpy().reshape(-1), atol=2e-5)
        np.testing.assert_allclose(st.P_pred, P_off.numpy().reshape(-1), atol=2e-5)
