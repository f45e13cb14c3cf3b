"""Run the conformance checks against engines: Hypothesis-driven, shrunk reproducers, a table.

Levels:

* ``kernel``: ``examples`` Hypothesis cases, then fixed seeded cases at real vocabulary sizes
  (32000 and 152064, :func:`~autodeco_samplers.conformance.strategies.real_size_cases`).
  The Hypothesis cases: random heads (any hidden size, both feature modes), random logits (ties,
  plateaus, -inf, huge and tiny magnitudes; vocabularies from 1 to 152064, see
  :func:`~autodeco_samplers.conformance.strategies.vocab_sizes`), random request knobs. The
  engine's head outputs must be within ``head_tol`` of the NumPy reference in float64 and its
  distribution must agree by :func:`~autodeco_samplers.conformance.checker.check_distribution`.

  Hypothesis is *not* derandomised: each run explores new cases from a fresh seed, which is
  reported (``LevelResult.seed``, the table, a failure's message) so that a failing run can be
  replayed exactly: ``AUTODECO_CONFORMANCE_SEED=<seed>`` in the environment, or ``seed=`` of
  :func:`run_kernel` / :func:`run_engine` (same engine, same ``examples``).
* ``sampling``: for fixed seeds, ``n`` draws of the engine's real sampler must fit the
  engine's own kernel distribution (G-test p-value above ``alpha``); a wrong rule fails both.
* ``end-to-end``: the engine's own per-step output along a forced path (engines that
  implement ``end_to_end``), each step checked like the kernel level.
"""

from __future__ import annotations

import os
import random
from dataclasses import asdict, dataclass
from typing import Iterable, List, Optional

import numpy as np

from autodeco_samplers.core.policy import DecodingPolicy

from autodeco_samplers.conformance.checker import DEFAULT_HEAD_TOL, DEFAULT_TOL, check_distribution, check_heads
from autodeco_samplers.conformance.engines import ConformanceEngine, get_engine
from autodeco_samplers.conformance.stats import draws_fit_pvalue

LEVELS = ("kernel", "sampling", "end-to-end")
SEED_ENV = "AUTODECO_CONFORMANCE_SEED"


def conformance_seed(seed: Optional[int] = None) -> int:
    """``seed`` if given, else ``$AUTODECO_CONFORMANCE_SEED``, else a fresh random seed."""
    if seed is not None:
        return int(seed)
    env = os.environ.get(SEED_ENV)
    if env:
        try:
            return int(env)
        except ValueError:
            raise ValueError(f"{SEED_ENV}={env!r} is not an integer seed") from None
    return random.SystemRandom().randrange(2**32)


@dataclass
class LevelResult:
    engine: str
    level: str
    verdict: str  # "pass", "FAIL", "skipped", "not supported"
    cases: int = 0
    max_deviation: float = 0.0  # kernel/e2e: max TV distance; sampling: min p-value
    reason: str = ""
    seed: Optional[int] = None  # kernel: the Hypothesis seed of this run (replay with it)

    def to_dict(self):
        return asdict(self)


class ConformanceFailure(AssertionError):
    """Raised by :func:`assert_conforms`; the message holds the shrunk reproducer."""


def reference_heads_float64(hidden, logits, heads, policy):
    """The reference step's heads and policy in float64 for one batch: a
    :class:`~autodeco_samplers.core.interfaces.NumpyStep` without ``probs``."""
    from autodeco_samplers.heads import AutoDecoHeads
    from autodeco_samplers.core.step import numpy_heads_policy

    heads64 = AutoDecoHeads(heads.config, heads.tensors, dtype=np.float64)
    return numpy_heads_policy(np.asarray(hidden, np.float64), np.asarray(logits, np.float64), heads64, policy)


def check_kernel_case(engine: ConformanceEngine, case, policy: DecodingPolicy, *, eps=None, tol=DEFAULT_TOL, head_tol=DEFAULT_HEAD_TOL):
    """Check one (heads case, policy) on ``engine``; returns ``(ok, max_tv, message)``."""
    heads = case.heads()
    out = engine.kernel(case.hidden, case.logits, heads, policy)
    ref = reference_heads_float64(case.hidden, case.logits, heads, policy)
    T_pred, P_pred, T, P = ref.T_pred, ref.P_pred, ref.T, ref.P
    problems = []
    msg = check_heads(out.T_pred, out.P_pred, T_pred, P_pred, head_tol=head_tol)
    if msg:
        problems.append("predicted " + msg)
    msg = check_heads(out.T, out.P, T, P, head_tol=head_tol)
    if msg:
        problems.append("used " + msg)
    verdict = check_distribution(case.logits, np.asarray(out.T), np.asarray(out.P), out.probs, eps=eps, tol=tol)
    if not verdict.ok:
        problems.append(verdict.describe(engine.name))
    return not problems, verdict.max_tv, "\n".join(problems)


def _replay_hint(engine, examples: int, seed: int) -> str:
    return (
        f"replay: Hypothesis seed {seed}: {SEED_ENV}={seed} autodeco conformance --engines {engine.name} "
        f"--levels kernel --examples {examples}  (or run_kernel(engine, {examples}, seed={seed}))"
    )


def _hypothesis_level(engine, examples, check, seed: Optional[int] = None, fixed=()):
    """Run ``check(case, policy)`` under Hypothesis from ``seed``, then on the ``fixed`` cases;
    returns a LevelResult (a Hypothesis failure shrunk, with the seed to replay it)."""
    from hypothesis import HealthCheck, given, settings, strategies as st
    from hypothesis import seed as hypothesis_seed

    from autodeco_samplers.conformance.strategies import heads_cases, policies

    seed = conformance_seed(seed)
    seen = {"cases": 0, "max": 0.0}

    @hypothesis_seed(seed)
    @settings(
        max_examples=examples,
        derandomize=False,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )
    @given(case=heads_cases(), policy=st.one_of(st.just(DecodingPolicy()), policies()))
    def prop(case, policy):
        ok, dev, message = check(case, policy)
        seen["cases"] += 1
        seen["max"] = max(seen["max"], dev)
        if not ok:
            raise ConformanceFailure(message)

    try:
        prop()
    except ConformanceFailure as exc:
        notes = "\n".join(getattr(exc, "__notes__", []))
        reason = f"{exc}\n{notes}".strip() + "\n" + _replay_hint(engine, examples, seed)
        return LevelResult(engine.name, "kernel", "FAIL", seen["cases"], seen["max"], reason, seed)
    for case, policy in fixed:  # after Hypothesis, whose failures come shrunk
        ok, dev, message = check(case, policy)
        seen["cases"] += 1
        seen["max"] = max(seen["max"], dev)
        if not ok:
            reason = f"fixed real-size case (V={case.logits.shape[1]}, {case!r:.300}, {policy}):\n{message}"
            return LevelResult(engine.name, "kernel", "FAIL", seen["cases"], seen["max"], reason, seed)
    return LevelResult(engine.name, "kernel", "pass", seen["cases"], seen["max"], seed=seed)


def run_kernel(engine: ConformanceEngine, examples: int = 100, seed: Optional[int] = None, real_sizes: bool = True,
               **tols) -> LevelResult:
    """The kernel level: ``examples`` Hypothesis cases from ``seed`` (default:
    :func:`conformance_seed`), then the fixed real-size cases (unless ``real_sizes=False``)."""
    from autodeco_samplers.conformance.strategies import real_size_cases

    return _hypothesis_level(engine, examples, lambda case, policy: check_kernel_case(engine, case, policy, **tols),
                             seed=seed, fixed=real_size_cases() if real_sizes else ())


def run_sampling(engine: ConformanceEngine, n: int = 4000, seeds: Iterable[int] = (0, 1, 2), alpha: float = 1e-4) -> LevelResult:
    """Draws of the engine's real sampler vs its own kernel distribution on fixed cases."""
    from autodeco_samplers.conformance.strategies import HeadsCase

    min_p = 1.0
    cases = 0
    for seed in seeds:
        rng = np.random.default_rng(1000 + seed)
        H, V = 16, 12
        logits = (rng.normal(0, 2, (1, V))).astype(np.float32)
        logits[0, :3] = logits[0, :3].max() + np.array([0.0, -0.3, -0.6], np.float32)  # a few strong candidates
        case = HeadsCase(H, seed % 2 == 0, seed, 16, rng.normal(0, 1, (1, H)).astype(np.float32), logits)
        heads = case.heads()
        # sampling must be tested where the rule bites: moderate T and P
        policy = DecodingPolicy(fixed_temperature=0.8, fixed_top_p=0.7)
        dist = engine.kernel(case.hidden, case.logits, heads, policy).probs[0]
        ref_T, ref_P = 0.8, 0.7
        verdict = check_distribution(case.logits, np.float32(ref_T), np.float32(ref_P), dist[None])
        draws = engine.draw(case.hidden, case.logits, heads, policy, n, seed)
        counts = np.bincount(np.asarray(draws, dtype=np.int64), minlength=V)
        # compare with the *canonical* distribution: a wrong kernel fails here too
        from autodeco_samplers.core.reference import next_token_distribution

        canonical = next_token_distribution(case.logits.astype(np.float64), ref_T, ref_P)[0]
        p = draws_fit_pvalue(counts, canonical)
        min_p = min(min_p, p)
        cases += 1
        if p < alpha or not verdict.ok:
            reason = f"seed {seed}: draws vs canonical distribution G-test p = {p:.3g} (< {alpha:g})"
            if not verdict.ok:
                reason += "; kernel: " + verdict.describe(engine.name)
            return LevelResult(engine.name, "sampling", "FAIL", cases, min_p, reason)
    return LevelResult(engine.name, "sampling", "pass", cases, min_p)


def run_end_to_end(engine: ConformanceEngine, steps: int = 8, seed: int = 0, workdir=None) -> LevelResult:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        records = engine.end_to_end(workdir or tmp, steps, seed)
    worst = 0.0
    for i, rec in enumerate(records):
        ok_heads = check_heads(rec["T_pred"], rec["P_pred"], rec["ref_T_pred"], rec["ref_P_pred"])
        verdict = check_distribution(rec["logits"], rec["T"], rec["P"], rec["probs"])
        worst = max(worst, verdict.max_tv)
        if ok_heads or not verdict.ok:
            where = f"step {i}" + (f" ({rec['arch']})" if "arch" in rec else "")
            return LevelResult(engine.name, "end-to-end", "FAIL", i + 1, worst, f"{where}: {ok_heads or verdict.describe(engine.name)}")
    return LevelResult(engine.name, "end-to-end", "pass", len(records), worst)


def run_engine(engine_or_name, levels=LEVELS, examples: int = 100, seed: Optional[int] = None) -> List[LevelResult]:
    """All requested levels for one engine; unavailable engines yield 'skipped' rows.
    ``seed``: the kernel level's Hypothesis seed (default: :func:`conformance_seed`)."""
    engine = get_engine(engine_or_name) if isinstance(engine_or_name, str) else engine_or_name
    available, reason = engine.availability()
    results = []
    for level in levels:
        if not available:
            results.append(LevelResult(engine.name, level, "skipped", reason=reason))
        elif not engine.supports(level):
            results.append(LevelResult(engine.name, level, "not supported", reason="engine does not implement this level"))
        elif level == "kernel":
            results.append(run_kernel(engine, examples, seed=seed))
        elif level == "sampling":
            results.append(run_sampling(engine))
        else:
            results.append(run_end_to_end(engine))
    return results


def assert_conforms(
    engine: ConformanceEngine, levels=("kernel", "sampling"), examples: int = 100, seed: Optional[int] = None
) -> List[LevelResult]:
    """Raise :class:`ConformanceFailure` (with the shrunk reproducer and the seed to replay it)
    unless every level passes."""
    results = run_engine(engine, levels, examples, seed)
    failed = [r for r in results if r.verdict not in ("pass",)]
    if failed:
        raise ConformanceFailure("\n\n".join(f"[{r.engine} / {r.level}: {r.verdict}] {r.reason}" for r in failed))
    return results


def format_table(results: List[LevelResult]) -> str:
    width = max([22] + [len(r.engine) for r in results])
    lines = [f"{'engine':<{width}} {'level':<11} {'cases':>6} {'max dev':>10}  verdict"]
    for r in results:
        dev = f"{r.max_deviation:.2e}" if r.verdict in ("pass", "FAIL") else "-"
        note = f" ({r.reason.splitlines()[0][:90]})" if r.reason and r.verdict != "FAIL" else ""
        lines.append(f"{r.engine:<{width}} {r.level:<11} {r.cases:>6} {dev:>10}  {r.verdict}{note}")
    for r in results:
        if r.verdict == "FAIL":
            lines.append(f"\n--- {r.engine} / {r.level} failed ---\n{r.reason}")
    lines.append("max dev: kernel/end-to-end = largest total-variation distance; sampling = smallest G-test p-value")
    seeds = sorted({r.seed for r in results if r.seed is not None})
    if seeds:
        lines.append(f"kernel Hypothesis seed(s): {', '.join(map(str, seeds))} (replay: {SEED_ENV}=<seed>)")
    return "\n".join(lines)
