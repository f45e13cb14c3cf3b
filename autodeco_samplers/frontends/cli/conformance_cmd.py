"""``autodeco conformance``: run the conformance suite and print a table per engine and level.

``--wrong-rules`` also runs deliberately wrong rules; each must FAIL. The run then ends with a
verdict line (``all wrong rules failed as expected`` or which one passed) and, per wrong rule,
the shrunk reproducer Hypothesis found.
"""

from __future__ import annotations

import argparse
import json
import sys

from autodeco_samplers.frontends.validation import positive_int

from autodeco_samplers.frontends.cli._common import add_json, names_arg

LEVEL_NAMES = ("kernel", "sampling", "end-to-end")
WRONG_RULES = ("top_p_before_temperature", "drop_crossing")


def _known_engines():
    from autodeco_samplers.conformance.engines import engine_names

    return engine_names()


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("conformance", help="check that engines yield the canonical AutoDeco distribution")
    p.add_argument("--engines", default=None, metavar="A,B", help="comma-separated engine names (default: all known)")
    p.add_argument("--levels", default=None, metavar="L1,L2", help=f"comma-separated levels from {', '.join(LEVEL_NAMES)} (default: all)")
    p.add_argument("--examples", type=positive_int, default=100, help="Hypothesis examples per engine at kernel level")
    p.add_argument("--seed", type=int, default=None,
                   help="Hypothesis seed of the kernel level, to replay a run (default: $AUTODECO_CONFORMANCE_SEED, else fresh)")
    add_json(p)
    p.add_argument("--wrong-rules", action="store_true", help="also run two deliberately wrong rules (they must FAIL)")
    p.add_argument(
        "--native-report",
        metavar="FILE",
        default=None,
        help="instead: write a markdown report of where each engine's own temperature/top-p departs from the rule",
    )
    p.set_defaults(func=run)


def reproducer(reason: str) -> str:
    """The shrunk reproducer in a FAIL reason: what differs and the failing case, without
    Hypothesis' coverage notes."""
    lines = reason.strip().splitlines()
    for i, line in enumerate(lines):
        if line.strip().startswith("Explanation:"):  # Hypothesis' coverage notes, not the case
            lines = lines[:i]
            break
    return "\n".join(lines).rstrip()


def wrong_rule_lines(expected_failures) -> list:
    """The ``--wrong-rules`` block: one row per (rule, level), a verdict line, one reproducer per rule."""
    lines = ["", "Deliberately wrong rules (each must FAIL):"]
    lines += [f"  {r.engine:<34} {r.level:<9} {r.verdict}" for r in expected_failures]
    passed = sorted({r.engine for r in expected_failures if r.verdict != "FAIL"})
    rules = list(dict.fromkeys(r.engine for r in expected_failures))
    for rule in rules:
        fails = [r for r in expected_failures if r.engine == rule and r.verdict == "FAIL"]
        if fails:
            first = next((r for r in fails if r.level == "kernel"), fails[0])
            lines.append(f"\nreproducer for {rule} ({first.level} level, shrunk):")
            lines += ["  " + line for line in reproducer(first.reason).splitlines()]
    if passed:
        lines.append(f"\nverdict: NOT as expected: {', '.join(passed)} did not fail at every level; the suite missed a wrong rule")
    else:
        lines.append(f"\nverdict: all {len(rules)} wrong rules failed as expected")
    return lines


def run(args: argparse.Namespace) -> int:
    from autodeco_samplers.conformance.engines import WrongRuleEngine
    from autodeco_samplers.conformance.runner import LEVELS, format_table, run_engine

    names = names_arg(args.engines, "--engines", _known_engines) or _known_engines()
    levels = tuple(names_arg(args.levels, "--levels", LEVELS) or LEVELS)
    if args.native_report:
        from autodeco_samplers.conformance.native import native_report

        text = native_report()
        with open(args.native_report, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")
        if args.json:
            print(json.dumps({"report": args.native_report}))
        else:
            print(text)
        return 0
    results = []
    for name in names:
        results.extend(run_engine(name, levels, args.examples, seed=args.seed))
    expected_failures = []
    if args.wrong_rules:
        for rule in WRONG_RULES:
            expected_failures.extend(run_engine(WrongRuleEngine(rule), ("kernel", "sampling"), args.examples, seed=args.seed))
    wrong_ok = all(r.verdict == "FAIL" for r in expected_failures)
    if args.json:
        print(json.dumps({
            "results": [r.to_dict() for r in results],
            "wrong_rules": [r.to_dict() for r in expected_failures],
            "wrong_rules_failed_as_expected": wrong_ok if expected_failures else None,
        }, indent=2))
    else:
        print(format_table(results))
        if expected_failures:
            print("\n".join(wrong_rule_lines(expected_failures)))
    failed = any(r.verdict == "FAIL" for r in results) or not wrong_ok
    if failed and not args.json:
        bad = sorted({f"{r.engine}/{r.level}" for r in results if r.verdict == "FAIL"})
        if bad:
            print(f"autodeco conformance: FAIL: {', '.join(bad)}", file=sys.stderr)
    return 1 if failed else 0
