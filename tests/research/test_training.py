"""AutoDeco head training: the losses against loop-based re-implementations of the formulas,
gradients reach only the heads, training lowers the loss, checkpoints and resuming."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
from hypothesis import given, settings, strategies as st  # noqa: E402

from autodeco_samplers import load_heads  # noqa: E402
from autodeco_samplers.heads.model.torch_heads import AutoDecoHeadsModule  # noqa: E402
from autodeco_samplers.research.training import (  # noqa: E402
    HiddenCapture,
    TrainConfig,
    easy_token_keep_mask,
    encode_example,
    read_jsonl,
    temperature_loss,
    top_p_loss,
    train_heads,
)
from autodeco_samplers.research.training.trainer import compute_losses, heads_forward  # noqa: E402
from autodeco_samplers.core.errors import AutoDecoError  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --------------------------------------------------------------------------- independent formulas


def _softmax(xs):
    m = max(xs)
    e = [math.exp(x - m) for x in xs]
    s = sum(e)
    return [v / s for v in e]


def _log_softmax(xs):
    """log softmax by log-sum-exp, so a probability that underflows to 0 still has a finite log."""
    m = max(xs)
    lse = m + math.log(sum(math.exp(x - m) for x in xs))
    return [x - lse for x in xs]


def loop_temperature_loss(logits, labels, T, keep):
    """Per-token loop: mean over kept positions of softmax(l)[y] * -log softmax(l / max(T, .01))[y]."""
    terms = []
    for n in range(len(labels)):
        if labels[n] == -100 or not keep[n]:
            continue
        l = [float(v) for v in logits[n]]
        t = max(float(T[n]), 1e-2)
        log_q = _log_softmax([v / t for v in l])
        w = _softmax(l)[labels[n]]
        terms.append(w * -log_q[labels[n]])
    return sum(terms) / len(terms) if terms else 0.0


def loop_top_p_loss(logits, labels, T, P, alpha=30.0, exclusive=False):
    """Per-token loop: soft top-p by explicit sorting (desc prob, asc id) and running sums
    (the running sum *before* adding the token when ``exclusive``)."""
    terms = []
    for n in range(len(labels)):
        y = labels[n]
        if y == -100:
            continue
        l = [float(v) for v in logits[n]]
        q = _softmax([v / max(float(T[n]), 1e-8) for v in l])
        order = sorted(range(len(q)), key=lambda i: (-q[i], i))
        m = [0.0] * len(q)
        running = 0.0
        for i in order:
            before = running
            running += q[i]
            m[i] = math.exp(-alpha * max((before if exclusive else running) - float(P[n]), 0.0))
        z = sum(qi * mi for qi, mi in zip(q, m))
        soft_y = q[y] * m[y] / (z + 1e-9)
        terms.append(_softmax(l)[y] * -math.log(soft_y + 1e-9))
    return sum(terms) / len(terms) if terms else 0.0


@st.composite
def loss_inputs(draw):
    N = draw(st.integers(1, 6))
    V = draw(st.integers(2, 7))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(N, V, generator=g, dtype=torch.float64) * draw(st.sampled_from([0.5, 2.0, 6.0]))
    labels = torch.randint(0, V, (N,), generator=g)
    ignore = torch.rand(N, generator=g) < 0.25
    labels = torch.where(ignore, torch.full_like(labels, -100), labels)
    T = torch.rand(N, generator=g, dtype=torch.float64) * 2.0  # includes values below the 1e-2 clamp
    P = torch.rand(N, generator=g, dtype=torch.float64)
    keep = (torch.rand(N, generator=g) < 0.7) & (labels != -100)
    return logits, labels, T, P, keep


@settings(max_examples=40)
@given(loss_inputs())
def test_temperature_loss_matches_loop(inputs):
    logits, labels, T, P, keep = inputs
    got = float(temperature_loss(logits, labels, T, keep=keep))
    want = loop_temperature_loss(logits.tolist(), labels.tolist(), T.tolist(), keep.tolist())
    assert got == pytest.approx(want, rel=1e-4, abs=1e-6)


@settings(max_examples=40)
@given(loss_inputs(), st.sampled_from([1.0, 30.0, 200.0]))
def test_top_p_loss_matches_loop(inputs, alpha):
    logits, labels, T, P, _ = inputs
    got = float(top_p_loss(logits, labels, T, P, alpha=alpha))
    want = loop_top_p_loss(logits.tolist(), labels.tolist(), T.tolist(), P.tolist(), alpha=alpha)
    assert got == pytest.approx(want, rel=1e-4, abs=1e-5)


@settings(max_examples=40)
@given(loss_inputs(), st.sampled_from([1.0, 30.0, 200.0]))
def test_exclusive_top_p_loss_matches_loop(inputs, alpha):
    logits, labels, T, P, _ = inputs
    got = float(top_p_loss(logits, labels, T, P, alpha=alpha, prefix="exclusive"))
    want = loop_top_p_loss(logits.tolist(), labels.tolist(), T.tolist(), P.tolist(), alpha=alpha, exclusive=True)
    assert got == pytest.approx(want, rel=1e-4, abs=1e-5)


@settings(max_examples=30)
@given(st.integers(0, 2**31 - 1), st.sampled_from([2, 40, 152_064]))
def test_exclusive_soft_mask_tends_to_the_hard_rule(seed, V):
    """alpha -> inf: the exclusive soft mask keeps exactly the canonical nucleus (c_i < P, the
    crossing token kept; NumPy reference), the official inclusive one drops the crossing token."""
    from autodeco_samplers.core import reference as ref
    from autodeco_samplers.core.torch_ops import soft_top_p

    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, V, generator=g, dtype=torch.float64) * 3
    P = torch.rand(2, generator=g, dtype=torch.float64) * 0.9 + 0.05
    q = torch.softmax(logits, -1)
    kept = soft_top_p(q, P, alpha=1e12, prefix="exclusive") > 0  # every gap >= 1e-9 below: exp(-1000) = 0
    qn = q.numpy()
    for r in range(2):
        order = np.lexsort((np.arange(V), -qn[r]))  # descending prob, ties by ascending id (the canonical order)
        excl = np.cumsum(qn[r][order]) - qn[r][order]
        if np.abs(excl - float(P[r])).min() < 1e-9:
            continue  # a token exactly at the threshold may legitimately fall either side
        want = np.zeros(V, dtype=bool)
        want[order[excl < float(P[r])]] = True
        assert kept[r].numpy().tolist() == want.tolist()
        # and that is the canonical nucleus of the NumPy reference (float32 prefix sums there)
        probs = ref.next_token_distribution(logits[r:r + 1].numpy(), 1.0, float(P[r]))[0]
        assert (probs > 0).sum() == pytest.approx(want.sum(), abs=1)
    inclusive = torch.from_numpy(ref.soft_top_p(q.numpy(), P.numpy(), alpha=1e12)) > 0
    assert bool((inclusive <= kept).all())  # the inclusive limit keeps a subset: never the crossing token


def test_easy_token_mask_rule_and_rate():
    g = torch.Generator().manual_seed(0)
    N, V = 20000, 5
    logits = torch.randn(N, V, generator=g)
    labels = torch.randint(0, V, (N,), generator=g)
    labels[:100] = -100
    keep = easy_token_keep_mask(logits, labels, 0.6, torch.Generator().manual_seed(7))
    # independent: the same uniform draws, applied position by position
    u = torch.rand(labels.shape, generator=torch.Generator().manual_seed(7))
    am = logits.argmax(-1)
    want = [lab != -100 and not (int(am[i]) == lab and float(u[i]) < 0.6) for i, lab in enumerate(labels.tolist())]
    assert keep.tolist() == want
    easy = (am == labels) & (labels != -100)
    assert float(keep[easy].float().mean()) == pytest.approx(0.4, abs=0.02)
    assert bool(keep[~easy & (labels != -100)].all())
    assert not bool(keep[:100].any())
    assert easy_token_keep_mask(logits, labels, 0.0).sum() == (labels != -100).sum()


def test_loss_weighting_and_empty_cases():
    logits = torch.tensor([[3.0, 0.0, 0.0]])
    T = torch.tensor([1.0], requires_grad=True)
    # DFT weight: the base prob of the label multiplies the CE
    w = torch.softmax(logits, -1)[0, 1]
    ce = -torch.log_softmax(logits, -1)[0, 1]
    assert float(temperature_loss(logits, torch.tensor([1]), T, keep=torch.tensor([True])).detach()) == pytest.approx(float(w * ce), rel=1e-6)
    assert float(temperature_loss(logits, torch.tensor([1]), T, keep=torch.tensor([True]), dft=False).detach()) == pytest.approx(float(ce), rel=1e-6)
    # nothing valid: zero, still differentiable
    z = temperature_loss(logits, torch.tensor([-100]), T)
    z.backward()
    assert float(z.detach()) == 0.0 and T.grad is not None


# --------------------------------------------------------------------------- model-level


@pytest.fixture(scope="module")
def tiny():
    from autodeco_samplers.models import default_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = default_model.base_path()
    from autodeco_samplers.research.training.trainer import dtype_kwargs

    model = AutoModelForCausalLM.from_pretrained(str(base), **dtype_kwargs(torch.float32)).eval()
    tok = AutoTokenizer.from_pretrained(str(base))
    return model, tok


@pytest.fixture(scope="module")
def records():
    from autodeco_samplers.research.evaluation import toy_task as task

    return task.training_records(task.TaskSpec(), 256, seed=11)


def test_hidden_capture_is_post_norm_last_hidden_state(tiny):
    model, tok = tiny
    ids = torch.tensor([[tok.bos_token_id] + tok("pick one of red fox owl", add_special_tokens=False)["input_ids"]])
    with torch.no_grad(), HiddenCapture(model) as cap:
        out = model(input_ids=ids, output_hidden_states=True)
    assert torch.equal(cap.hidden, out.hidden_states[-1])  # transformers 5.x: post-norm for Llama
    with torch.no_grad():
        assert torch.allclose(model.get_output_embeddings()(cap.hidden), out.logits, atol=1e-5)
        pre_norm_like = model.model.norm(cap.hidden)  # norm applied twice differs: it really is post-norm
    assert not torch.allclose(pre_norm_like, cap.hidden, atol=1e-3)


def test_completion_only_labels(tiny):
    _, tok = tiny
    ex = encode_example(tok, "pick one of red fox owl and spell it backwards:", " fox -> x o f")
    n_prompt = 1 + len(tok("pick one of red fox owl and spell it backwards:", add_special_tokens=False)["input_ids"])
    assert ex.input_ids[0] == tok.bos_token_id and ex.input_ids[-1] == tok.eos_token_id
    assert ex.labels[:n_prompt] == [-100] * n_prompt
    assert ex.labels[n_prompt:] == ex.input_ids[n_prompt:]
    assert tok.decode(ex.input_ids[n_prompt:-1]) == " fox -> x o f"


def test_jsonl_errors_name_the_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "a"}\n')
    with pytest.raises(AutoDecoError, match=r"bad.jsonl:2"):
        read_jsonl(bad)
    with pytest.raises(AutoDecoError, match="not found"):
        read_jsonl(tmp_path / "missing.jsonl")


def test_gradients_reach_only_the_heads(tiny, records):
    from autodeco_samplers.research.training.data import collate, encode_examples

    model, tok = tiny
    for p in model.parameters():
        p.requires_grad_(False)
    heads = AutoDecoHeadsModule.create(model.config.hidden_size, width=16, seed=0)
    batch = collate(encode_examples(tok, records[:8]), tok.pad_token_id)
    cfg = TrainConfig(width=16, easy_token_ratio=0.0)
    logits, T, P = heads_forward(model, heads, batch)
    losses = compute_losses(logits, T, P, batch["labels"], cfg, None)
    losses["total"].backward()
    assert all(p.grad is None for p in model.parameters())
    for name, p in heads.named_parameters():
        assert p.grad is not None and float(p.grad.abs().sum()) > 0, name
    # the top-p loss alone reaches the temperature head through the distribution (T not
    # detached there), the temperature loss alone never reaches the top-p head (its input T is detached)
    for which, reached in (("temperature", {"temp_head"}), ("top_p", {"temp_head", "top_p_head"})):
        heads.zero_grad(set_to_none=True)
        logits, T, P = heads_forward(model, heads, batch)
        compute_losses(logits, T, P, batch["labels"], cfg, None)[which].backward()
        got = {n.split(".")[0] for n, p in heads.named_parameters() if p.grad is not None and float(p.grad.abs().sum()) > 0}
        assert got == reached, which


def _fixed_loss(model, tok, heads, records):
    from autodeco_samplers.research.training.data import collate, encode_examples

    batch = collate(encode_examples(tok, records), tok.pad_token_id)
    with torch.no_grad():
        logits, T, P = heads_forward(model, heads, batch)
        return float(compute_losses(logits, T, P, batch["labels"], TrainConfig(easy_token_ratio=0.0), None)["total"])


def test_training_lowers_the_loss(tiny, records):
    model, tok = tiny
    init = AutoDecoHeadsModule.create(model.config.hidden_size, width=32, seed=3)
    before = _fixed_loss(model, tok, init, records[:64])
    res = train_heads((model, tok), records, None, TrainConfig(steps=25, batch_size=32, width=32, seed=3, lr=3e-3), progress=False)
    after = _fixed_loss(model, tok, res.heads, records[:64])
    assert after < 0.9 * before, (before, after)
    assert res.history[-1]["total"] < res.history[0]["total"]


def test_checkpoints_official_layout_and_resume(tiny, records, tmp_path):
    model, tok = tiny
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records[:64]))
    cfg = TrainConfig(steps=4, batch_size=8, grad_accum=2, width=16, seed=5, save_every=2)
    full = train_heads((model, tok), data, tmp_path / "full", cfg, progress=False)
    out = tmp_path / "full"
    assert (out / "checkpoint-2" / "optimizer.safetensors").is_file()
    assert json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())["step"] == 2
    assert not list(out.rglob("*.bin")) and not list(out.rglob("*.pt")) and not list(out.rglob("*.pkl"))
    conf = json.loads((out / "config.json").read_text())
    assert conf["model_type"] == "autodeco" and conf["enable_temperature_head"] and conf["enable_top_p_head"]
    from safetensors import safe_open

    with safe_open(str(out / "autodeco_heads.safetensors"), framework="np") as fh:
        assert sorted(fh.keys()) == sorted(f"{h}.mlp.{i}.{w}" for h in ("temp_head", "top_p_head") for i in (0, 2) for w in ("weight", "bias"))
    np_heads = load_heads(out)
    h = torch.randn(5, model.config.hidden_size)
    lg = torch.randn(5, model.config.vocab_size)
    T_np, P_np = np_heads.predict(h.numpy(), lg.numpy())
    T_t, P_t = full.heads(h, lg)
    np.testing.assert_allclose(T_np, T_t.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(P_np, P_t.detach().numpy(), rtol=1e-5, atol=1e-5)

    # interrupted at step 2, then resumed to 4: the same heads as the uninterrupted run
    part = tmp_path / "part"
    train_heads((model, tok), data, part, TrainConfig(**{**cfg.__dict__, "steps": 2}), progress=False)
    resumed = train_heads((model, tok), data, part, cfg, progress=False)
    assert resumed.step == 4 and len(resumed.history) == 4
    for (k, a), (_, b) in zip(full.heads.state_dict().items(), resumed.heads.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=k)


def test_temperature_loss_weight_and_prefix_options(tiny, records):
    from autodeco_samplers.research.training.data import collate, encode_examples

    model, tok = tiny
    heads = AutoDecoHeadsModule.create(model.config.hidden_size, width=16, seed=1)
    batch = collate(encode_examples(tok, records[:8]), tok.pad_token_id)
    logits, T, P = heads_forward(model, heads, batch)
    for w in (1.0, 0.25, 0.0):
        cfg = TrainConfig(width=16, easy_token_ratio=0.0, temperature_loss_weight=w)
        losses = compute_losses(logits, T, P, batch["labels"], cfg, None)
        assert float(losses["total"]) == pytest.approx(w * float(losses["temperature"]) + float(losses["top_p"]), rel=1e-6)
    # weight 0: the temperature head still learns, through the top-p loss only
    heads.zero_grad(set_to_none=True)
    cfg = TrainConfig(width=16, temperature_loss_weight=0.0, soft_top_p_prefix="exclusive")
    compute_losses(logits, T, P, batch["labels"], cfg, None)["total"].backward()
    assert all(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in heads.parameters())
    excl = compute_losses(logits, T, P, batch["labels"], cfg, None)["top_p"]
    incl = compute_losses(logits, T, P, batch["labels"], TrainConfig(width=16), None)["top_p"]
    assert float(excl) != float(incl)
    with pytest.raises(AutoDecoError, match="soft_top_p_prefix"):
        TrainConfig(soft_top_p_prefix="middle")
    with pytest.raises(AutoDecoError, match="temperature_loss_weight"):
        TrainConfig(temperature_loss_weight=-1.0)
    with pytest.raises(ValueError, match="prefix"):
        top_p_loss(logits[:, :-1], batch["labels"][:, 1:], T[:, :-1], P[:, :-1], prefix="middle")


def test_on_step_callback_sees_every_step(tiny, records):
    model, tok = tiny
    seen = []
    train_heads((model, tok), records[:32], None, TrainConfig(steps=3, batch_size=8, width=8),
                progress=False, on_step=lambda step, heads: seen.append(step))
    assert seen == [1, 2, 3]


def test_single_head_training(tiny, records, tmp_path):
    model, tok = tiny
    res = train_heads((model, tok), records[:32], tmp_path / "t", TrainConfig(steps=2, batch_size=8, width=8, train_top_p=False),
                      progress=False)
    assert "top_p" not in res.history[-1]
    heads = load_heads(tmp_path / "t")
    assert heads.config.enable_temperature_head and not heads.config.enable_top_p_head
    with pytest.raises(AutoDecoError, match="at least one head"):
        TrainConfig(train_temperature=False, train_top_p=False)


def test_cli_train(tmp_path, records):
    from autodeco_samplers.models import default_model
    from autodeco_samplers.frontends.cli import main

    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records[:32]))
    rc = main(["train", "--model", str(default_model.base_path()), "--data", str(data), "--out", str(tmp_path / "h"),
               "--steps", "3", "--batch-size", "8", "--width", "8", "--train-heads", "top-p", "--quiet", "--save-every", "0"])
    assert rc == 0
    heads = load_heads(tmp_path / "h")
    assert heads.config.enable_top_p_head and not heads.config.enable_temperature_head
    # the named recipe options reach the trainer (recorded in the checkpoint's config)
    rc = main(["train", "--model", str(default_model.base_path()), "--data", str(data), "--out", str(tmp_path / "h2"),
               "--steps", "2", "--batch-size", "8", "--width", "8", "--quiet", "--save-every", "0",
               "--soft-top-p-prefix", "exclusive", "--temperature-loss-weight", "0"])
    assert rc == 0
    conf = json.loads((tmp_path / "h2" / "config.json").read_text())["autodeco_training"]
    assert conf["soft_top_p_prefix"] == "exclusive" and conf["temperature_loss_weight"] == 0.0
    state = json.loads((tmp_path / "h" / "trainer_state.json").read_text())["config"]
    assert state["soft_top_p_prefix"] == "inclusive" and state["temperature_loss_weight"] == 1.0  # official default
    assert (tmp_path / "h" / "checkpoint-3" / "optimizer.safetensors").is_file()
