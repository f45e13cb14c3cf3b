"""``TrainConfig(cache_hidden=True)``: the cached path computes the same losses as the
uncached one and trains, resumes and records the option (embedded tiny model)."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from autodeco_samplers.core.errors import AutoDecoError  # noqa: E402
from autodeco_samplers.heads.model.torch_heads import AutoDecoHeadsModule  # noqa: E402
from autodeco_samplers.research.training import TrainConfig, train_heads  # noqa: E402
from autodeco_samplers.research.training.cache import cache_hidden_states, cached_batches, cached_logits  # noqa: E402
from autodeco_samplers.research.training.data import batches, encode_examples  # noqa: E402
from autodeco_samplers.research.training.trainer import compute_losses, heads_forward  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from autodeco_samplers.models import default_model

    base = default_model.base_path()
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(str(base))


@pytest.fixture(scope="module")
def records():
    from autodeco_samplers.research.evaluation import toy_task as task

    return task.training_records(task.TaskSpec(), 48, seed=5)


def test_cache_keeps_only_labelled_rows(tiny, records):
    model, tok = tiny
    examples = encode_examples(tok, records)
    cache = cache_hidden_states(model, examples, tok.pad_token_id, 7, "cpu")
    for ex, h, lab in zip(examples, cache.hidden, cache.labels):
        n_lab = sum(1 for y in ex.labels if y != -100)
        assert h.shape == (n_lab, model.config.hidden_size) and lab.tolist() == [y for y in ex.labels if y != -100]
    assert cache.n_tokens == sum(int(x.numel()) for x in cache.labels)


def test_cached_losses_equal_uncached_losses(tiny, records):
    """Same batch, same heads, no easy-token draws: the cached path gives the same losses
    and gradients up to float rounding (padded batched forwards differ in the last bits)."""
    model, tok = tiny
    examples = encode_examples(tok, records[:16])
    heads = AutoDecoHeadsModule.create(model.config.hidden_size, width=16, seed=2)
    cfg = TrainConfig(width=16, easy_token_ratio=0.0)
    batch = next(batches(examples, 16, tok.pad_token_id, torch.Generator().manual_seed(0)))
    logits, T, P = heads_forward(model, heads, batch)
    ref = compute_losses(logits, T, P, batch["labels"], cfg, None)
    ref["total"].backward()
    g_ref = [p.grad.clone() for p in heads.parameters()]
    heads.zero_grad(set_to_none=True)

    cache = cache_hidden_states(model, examples, tok.pad_token_id, 5, "cpu")
    hidden, labels = next(cached_batches(cache, 16, torch.Generator().manual_seed(0)))
    logits_c = cached_logits(model, hidden)
    T_c, P_c = heads(hidden, logits_c)
    got = compute_losses(logits_c, T_c, P_c, labels, cfg, None, shifted=True)
    for k in ("temperature", "top_p", "total"):
        assert float(got[k].detach()) == pytest.approx(float(ref[k].detach()), rel=1e-4, abs=1e-6), k
    got["total"].backward()
    for a, b in zip(g_ref, (p.grad for p in heads.parameters())):
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-6)


def test_cached_training_learns_resumes_and_is_recorded(tiny, records, tmp_path):
    model, tok = tiny
    cfg = TrainConfig(steps=6, batch_size=8, width=16, seed=4, lr=3e-3, save_every=3, cache_hidden=True)
    full = train_heads((model, tok), records, tmp_path / "full", cfg, progress=False)
    assert full.history[-1]["total"] < full.history[0]["total"]
    conf = json.loads((tmp_path / "full" / "config.json").read_text())
    assert conf["autodeco_training"]["cache_hidden"] is True
    # an interrupted run (3 steps) resumed to 6 ends with the same heads
    train_heads((model, tok), records, tmp_path / "part", TrainConfig(**{**cfg.__dict__, "steps": 3}), progress=False)
    resumed = train_heads((model, tok), records, tmp_path / "part", cfg, progress=False)
    for a, b in zip(full.heads.state_dict().values(), resumed.heads.state_dict().values()):
        assert torch.equal(a, b)


def test_soft_capped_logits_are_refused(tiny, records):
    model, tok = tiny
    model.config.final_logit_softcapping = 30.0
    try:
        with pytest.raises(AutoDecoError, match="soft-caps its logits"):
            cache_hidden_states(model, encode_examples(tok, records[:2]), tok.pad_token_id, 2, "cpu")
    finally:
        del model.config.final_logit_softcapping
