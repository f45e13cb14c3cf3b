"""``autodeco conformance``: run the conformance suite and print a table per engine and level."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("conformance", help="check that engines yield the canonical AutoDeco distribution")
    p.add_argument("--engines", nargs="+", default=None, help="engine names (default: all known)")
    p.add_argument("--levels", nargs="+", default=None, choices=["kernel", "sampling", "end-to-end"])
    p.add_argument("--examples", type=int, default=100, help="Hypothesis examples per engine at kernel level")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--wrong-rules", action="store_true", help="also run two deliberately wrong rules (they must FAIL)")
    p.add_argument(
        "--native-report",
        metavar="FILE",
        default=None,
        help="instead: write a markdown report of where each engine's own temperature/top-p departs from the rule",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from autodeco_samplers.conformance.engines import WrongRuleEngine, engine_names
    from autodeco_samplers.conformance.runner import LEVELS, format_table, run_engine

    if args.native_report:
        from autodeco_samplers.conformance.native import native_report

        text = native_report()
        with open(args.native_report, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")
        print(text)
        return 0
    names = args.engines or engine_names()
    levels = tuple(args.levels or LEVELS)
    results = []
    for name in names:
        results.extend(run_engine(name, levels, args.examples))
    expected_failures = []
    if args.wrong_rules:
        for rule in ("top_p_before_temperature", "drop_crossing"):
            expected_failures.extend(run_engine(WrongRuleEngine(rule), ("kernel", "sampling"), args.examples))
    if args.json:
        print(json.dumps({"results": [r.to_dict() for r in results], "wrong_rules": [r.to_dict() for r in expected_failures]}, indent=2))
    else:
        print(format_table(results))
        if expected_failures:
            print("\nDeliberately wrong rules (each must FAIL):")
            print("\n".join(f"  {r.engine:<34} {r.level:<9} {r.verdict}" for r in expected_failures))
    failed = any(r.verdict == "FAIL" for r in results) or any(r.verdict != "FAIL" for r in expected_failures)
    return 1 if failed else 0
