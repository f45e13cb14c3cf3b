#!/usr/bin/env python
"""Why do the AutoDeco heads keep P near 1 at the choice token? Measurements on the training data.

    python bench/quality/choice_token_analysis.py                      # embedded default model
    python bench/quality/choice_token_analysis.py --model B --heads H   # any model trained on the task

For the *choice token* (the first completion token: one of the prompt's listed words, each
right with probability 1/k in the data) of ``--records`` training prompts (the same generator
the default build uses for the heads' data), it reports:

* the backbone: mass on the listed words, on unlisted tokens, how often the listed words are
  the top-k, and the inclusive prefix sum ``C_k`` (at T = 1 and at the heads' T);
* the heads' prediction ``(T, P)`` there and what the hard nucleus rule then keeps;
* the top-p loss at that token as a function of ``P`` (the heads' T held fixed), exact
  expectation over the uniformly chosen label: the official soft mask (inclusive prefix sum,
  ``alpha``) with and without the DFT weight, and the exclusive-prefix variant; the loss-optimal
  ``P`` per variant and the hard-rule invalid-choice rate at that ``P``;
* the share of the top-p head's gradient that comes from choice tokens in the real loss.

Writes JSON (``--out``, default ``bench/results/choice_token_analysis.json``) and prints a summary.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from autodeco_samplers.research.evaluation.toy import portable_path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from bench._provenance import write_json  # noqa: E402


def choice_batch(model, tok, heads, records, spec):
    """Logits, hidden state and listed-word ids at the choice position of each record."""
    import torch

    from autodeco_samplers.research.training.trainer import HiddenCapture

    from autodeco_samplers.research.training.data import collate, encode_example

    word_id = {w: tok(" " + w, add_special_tokens=False)["input_ids"] for w in spec.words}
    if any(len(v) != 1 for v in word_id.values()):
        raise SystemExit("each task word must be one token for this analysis")
    word_id = {w: v[0] for w, v in word_id.items()}
    exs = [encode_example(tok, r["prompt"], r["completion"]) for r in records]
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    L, H, listed, label = [], [], [], []
    for start in range(0, len(exs), 256):
        chunk = exs[start:start + 256]
        b = collate(chunk, pad)
        with torch.no_grad(), HiddenCapture(model) as cap:
            out = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], use_cache=False)
        for i, e in enumerate(chunk):
            first = next(j for j, y in enumerate(e.labels) if y != -100)  # the choice token's index
            L.append(out.logits[i, first - 1].float())
            H.append(cap.hidden[i, first - 1].float())
            label.append(e.labels[first])
    for r in records:
        opts = r["prompt"].split(" and ")[0].split()[3:]
        listed.append([word_id[w] for w in opts])
    return torch.stack(L), torch.stack(H), torch.tensor(listed), torch.tensor(label)


def expected_top_p_loss(logits, listed, T, P, alpha, *, exclusive=False, dft=True):
    """Per-example expected top-p loss at the choice token, label uniform over the listed words."""
    import torch

    q = torch.softmax(logits / T[:, None], dim=-1)
    from autodeco_samplers.core.torch_ops import soft_top_p

    soft = soft_top_p(q, P, alpha, prefix="exclusive" if exclusive else "inclusive")
    nll = -torch.log(soft.gather(1, listed) + 1e-9)  # [N, k]
    if dft:
        nll = nll * torch.softmax(logits, dim=-1).gather(1, listed)
    return nll.mean(-1)


def hard_invalid(logits, listed, T, P):
    """Probability of an unlisted choice under the canonical rule (T, P per row)."""

    from autodeco_samplers.core import torch_ops

    probs = torch_ops.next_token_distribution(logits, T, P, check=False)
    return 1.0 - probs.gather(1, listed).sum(-1), (probs > 0).sum(-1).float()


def analyse(model, tok, heads, records, spec, *, alpha=30.0):
    import torch

    logits, hidden, listed, label = choice_batch(model, tok, heads, records, spec)
    k = listed.shape[1]
    N = logits.shape[0]
    with torch.no_grad():
        T_pred, P_pred = heads(hidden, logits)
    q1 = torch.softmax(logits, -1)
    listed_mass = q1.gather(1, listed).sum(-1)
    topk = q1.topk(k, dim=-1).indices
    listed_are_topk = torch.stack([torch.isin(topk[i], listed[i]).all() for i in range(N)]).float()

    def prefix_k(q):
        return torch.sort(q, -1, descending=True).values[:, :k].sum(-1)

    qT = torch.softmax(logits / T_pred[:, None], -1)
    inv_pred, kept_pred = hard_invalid(logits, listed, T_pred, P_pred.clamp(0, 1))
    grid = np.round(np.arange(0.30, 1.0001, 0.01), 2)
    out = {
        "n_records": N,
        "backbone": {
            "listed_mass_mean": float(listed_mass.mean()),
            "unlisted_mass_mean": float(1 - listed_mass.mean()),
            "unlisted_mass_quantiles_10_50_90": [float(x) for x in torch.quantile(1 - listed_mass, torch.tensor([0.1, 0.5, 0.9]))],
            "listed_are_top_k_fraction": float(listed_are_topk.mean()),
            "label_prob_mean": float(q1.gather(1, label[:, None]).mean()),
            "C_k_at_T1_mean": float(prefix_k(q1).mean()),
            "C_k_at_T_pred_mean": float(prefix_k(qT).mean()),
        },
        "heads": {
            "T_pred_mean": float(T_pred.mean()), "P_pred_mean": float(P_pred.mean()),
            "P_pred_quantiles_10_50_90": [float(x) for x in torch.quantile(P_pred, torch.tensor([0.1, 0.5, 0.9]))],
            "hard_rule_invalid_rate": float(inv_pred.mean()), "hard_rule_kept_tokens_mean": float(kept_pred.mean()),
        },
        "loss_vs_P": {"P": grid.tolist()},
        "optimal_P": {},
    }
    variants = {
        "official (inclusive, DFT)": dict(exclusive=False, dft=True),
        "inclusive, no DFT": dict(exclusive=False, dft=False),
        "exclusive, DFT": dict(exclusive=True, dft=True),
    }
    for Tname, Tfix in (("T_pred", T_pred), ("T=1", torch.ones(N))):
        for name, kw in variants.items():
            curve = []
            per_ex = []
            for P in grid:
                Pt = torch.full((N,), float(P))
                le = expected_top_p_loss(logits, listed, Tfix, Pt, alpha, **kw)
                curve.append(float(le.mean()))
                per_ex.append(le)
            per_ex = torch.stack(per_ex, 1)  # [N, G]
            best_common = grid[int(np.argmin(curve))]
            best_each = torch.tensor(grid, dtype=torch.float32)[per_ex.argmin(1)]
            inv_c, kept_c = hard_invalid(logits, listed, Tfix, torch.full((N,), float(best_common)))
            inv_e, kept_e = hard_invalid(logits, listed, Tfix, best_each)
            key = f"{name} @ {Tname}"
            out["loss_vs_P"][key] = curve
            out["optimal_P"][key] = {
                "best_common_P": float(best_common),
                "hard_invalid_at_best_common_P": float(inv_c.mean()), "hard_kept_at_best_common_P": float(kept_c.mean()),
                "best_per_example_P_mean": float(best_each.mean()),
                "hard_invalid_at_best_per_example_P": float(inv_e.mean()),
                "loss_at_P_pred": float(expected_top_p_loss(logits, listed, Tfix, P_pred, alpha, **kw).mean()),
                "loss_at_best_common_P": float(min(curve)),
                "loss_at_P1": curve[-1],
                "loss_drop_P1_to_best": curve[-1] - float(min(curve)),
            }
    out["loss_vs_T"] = temperature_landscape(logits, listed, alpha)
    # gradient share: d(loss)/dP per position class in the official top-p loss on real batches
    out["gradient_share"] = gradient_share(model, tok, heads, records[:256], alpha)
    return out


def temperature_landscape(logits, listed, alpha, easy_ratio=0.6):
    """The recipe's per-token optimum of T at the choice token.

    For each T on a grid: the expected temperature loss (label uniform over the listed words;
    a label equal to the backbone's argmax is kept with probability ``1 - easy_ratio``; DFT
    weight on or off), plus the expected top-p loss at the best common P for that T (inclusive
    or exclusive soft mask). Reports the T minimising each total, and the population diversity
    of the listed words at that T (normalised entropy of the listed words' renormalised
    probabilities, averaged over records: the diversity a sampler that cuts exactly the
    unlisted tail would reach with infinitely many samples).
    """
    import torch

    N, k = listed.shape
    Ts = np.round(np.arange(0.3, 2.001, 0.05), 2)
    Pgrid = torch.tensor(np.round(np.arange(0.2, 1.0001, 0.02), 2), dtype=torch.float32)
    q1 = torch.softmax(logits, -1)
    w = q1.gather(1, listed)  # DFT weights of each possible label
    is_argmax = listed == logits.argmax(-1, keepdim=True)
    keep_p = torch.where(is_argmax, torch.tensor(1 - easy_ratio), torch.tensor(1.0))
    res = {"T": Ts.tolist(), "curves": {}, "optimal_T": {}}
    topp_best = {}
    for exclusive in (False, True):
        for dft in (True, False):
            vals = []
            for T in Ts:
                Tt = torch.full((N,), float(T))
                vals.append(min(float(expected_top_p_loss(logits, listed, Tt, torch.full((N,), float(P)), alpha,
                                                          exclusive=exclusive, dft=dft).mean()) for P in Pgrid))
            topp_best[("exclusive" if exclusive else "inclusive", dft)] = vals
    div = []
    for T in Ts:
        ql = torch.softmax(logits / float(T), -1).gather(1, listed)
        ql = ql / ql.sum(-1, keepdim=True)
        div.append(float((-(ql * ql.log()).sum(-1) / np.log(k)).mean()))
    for dft in (True, False):
        name = "DFT" if dft else "no DFT"
        tl = []
        for T in Ts:
            ce = -torch.log_softmax(logits / float(T), -1).gather(1, listed)
            wt = (w if dft else torch.ones_like(w)) * keep_p
            tl.append(float(((wt * ce).sum(-1) / keep_p.sum(-1)).mean()))
        res["curves"][f"temperature loss ({name})"] = tl
        i = int(np.argmin(tl))
        res["optimal_T"][f"temperature loss alone ({name})"] = {"T": float(Ts[i]), "listed_diversity_at_T": div[i]}
        for prefix in ("inclusive", "exclusive"):
            tp = topp_best[(prefix, dft)]
            total = [a + b for a, b in zip(tl, tp)]
            res["curves"][f"top-p loss at best P ({name}, {prefix})"] = tp
            res["curves"][f"total ({name}, {prefix})"] = total
            i = int(np.argmin(total))
            res["optimal_T"][f"total ({name}, {prefix})"] = {"T": float(Ts[i]), "listed_diversity_at_T": div[i]}
            i = int(np.argmin(tp))
            res["optimal_T"][f"top-p loss alone ({name}, {prefix})"] = {"T": float(Ts[i]), "listed_diversity_at_T": div[i]}
    res["listed_diversity"] = div
    return res


def gradient_share(model, tok, heads, records, alpha):
    """|dL_top-p/dP| summed over choice positions vs every other completion position (one batch)."""
    import torch

    from autodeco_samplers.research.training.data import collate, encode_example
    from autodeco_samplers.research.training.losses import shift_for_causal_lm, top_p_loss
    from autodeco_samplers.research.training.trainer import heads_forward

    exs = [encode_example(tok, r["prompt"], r["completion"]) for r in records]
    b = collate(exs, tok.pad_token_id)
    logits, T, P = heads_forward(model, heads, b)
    P = P.detach().requires_grad_(True)
    labels, lg, Ts, Ps = shift_for_causal_lm(b["labels"], logits, T.detach(), P)
    loss = top_p_loss(lg, labels, Ts, Ps, alpha=alpha)
    (g,) = torch.autograd.grad(loss, Ps)
    valid = labels != -100
    first = valid & (valid.cumsum(1) == 1)
    other = valid & ~first
    ga = g.abs()
    return {
        "choice_positions": int(first.sum()), "other_positions": int(other.sum()),
        "abs_grad_P_choice_sum": float(ga[first].sum()), "abs_grad_P_other_sum": float(ga[other].sum()),
        "signed_grad_P_choice_mean": float(g[first].mean()), "signed_grad_P_other_mean": float(g[other].mean()),
        "choice_share_of_abs_grad": float(ga[first].sum() / (ga[valid].sum() + 1e-30)),
        "P_other_positions_mean": float(P.detach()[:, :-1][other].mean()) if other.any() else None,
    }


DYNAMICS_RUNS = {  # name -> (TrainConfig overrides, number of training records)
    "lr 1e-3, 20000 records (default), 800 steps": ({"lr": 1e-3, "steps": 800}, 20000),
    "lr 3e-3, 20000 records, 400 steps": ({"lr": 3e-3, "steps": 400}, 20000),
    "lr 1e-3, 1000 records, 400 steps": ({"lr": 1e-3, "steps": 400}, 1000),
}


def dynamics(base_dir, spec, probe_records, *, every=50, data_seed=3):
    """P and T the heads predict at the choice token of ``probe_records`` during training
    (official recipe, the default build's head settings otherwise), every ``every`` steps."""
    import torch

    from autodeco_samplers.research.evaluation import toy_task as task
    from autodeco_samplers.models.default_model.build import BuildConfig
    from autodeco_samplers.research.evaluation.toy import load_model_and_heads
    from autodeco_samplers.research.training import TrainConfig, train_heads

    model, tok, _ = load_model_and_heads(base_dir, None)
    bc = BuildConfig()
    logits, hidden, listed, _ = choice_batch(model, tok, None, probe_records, spec)
    out = {}
    for name, (kw, n_records) in DYNAMICS_RUNS.items():
        trace = []

        def probe(step, heads):
            if step % every == 0:
                with torch.no_grad():
                    T, P = heads(hidden, logits)
                inv, kept = hard_invalid(logits, listed, T, P.clamp(0, 1))
                trace.append({"step": step, "T": float(T.mean()), "P": float(P.mean()), "hard_invalid": float(inv.mean()),
                              "kept": float(kept.mean())})

        cfg = TrainConfig(**{"batch_size": bc.head_batch_size, "width": bc.head_width, "seed": 0, "save_every": 0, **kw})
        records = task.training_records(spec, n_records, seed=data_seed)
        train_heads((model, tok), records, None, cfg, progress=False, on_step=probe)
        out[name] = trace
        print(json.dumps({name: trace[-1]}), flush=True)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", "--base", dest="base", default=None,
                   help="backbone folder, as the CLI's --model (default: the embedded default model's base/)")
    p.add_argument("--heads", default=None)
    p.add_argument("--records", type=int, default=2000)
    p.add_argument("--data-seed", type=int, default=3, help="training_records seed (the default build uses seed + 3 for the heads)")
    p.add_argument("--alpha", type=float, default=30.0)
    p.add_argument("--dynamics", action="store_true", help="also train heads (3 short runs) and probe P at the choice token")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "choice_token_analysis.json"))
    args = p.parse_args()
    import torch

    torch.set_num_threads(1)
    from autodeco_samplers.models import default_model
    from autodeco_samplers.research.evaluation import toy_task as task
    from autodeco_samplers.research.evaluation.toy import load_model_and_heads

    base = args.base or default_model.base_path()
    heads_dir = args.heads or default_model.heads_path()
    spec = default_model.task_spec() if args.base is None else task.TaskSpec()
    model, tok, heads = load_model_and_heads(base, heads_dir)
    records = task.training_records(spec, args.records, seed=args.data_seed)
    t0 = time.perf_counter()
    res = analyse(model, tok, heads, records, spec, alpha=args.alpha)
    if args.dynamics:
        res["dynamics"] = dynamics(base, spec, records[:256])
    res = {"base": portable_path(base), "heads": portable_path(heads_dir), "alpha": args.alpha, "data_seed": args.data_seed, **res,
           "seconds": time.perf_counter() - t0}
    write_json(args.out, res)
    summary = {k: res[k] for k in ("backbone", "heads", "optimal_P", "gradient_share")}
    summary["optimal_T"] = res["loss_vs_T"]["optimal_T"]
    if "dynamics" in res:
        summary["dynamics_last"] = {k: v[-1] for k, v in res["dynamics"].items()}
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
