"""The toy model's evaluation over several evaluation seeds, as a results JSON.

`autodeco eval`'s report (greedy, default T=1 P=1, the static (T, P) grid and its oracle,
mean-static and AutoDeco on the held-out prompts of the choice-then-derive task; the embedded
default model unless ``--model``/``--heads``), computed by the CLI's own code
(``autodeco_samplers.frontends.cli.eval_cmd.run_report``) with ``--eval-seeds 0,1,2`` by default,
written with its provenance. The same numbers as
``autodeco eval --eval-seeds 0,1,2 --no-plots --json``, the command that wrote
``bench/results/eval_default_model_3seeds.json`` before this script existed (docs/evaluation.md,
"Measured", quotes it).

    python bench/quality/eval_default_model.py      # -> bench/results/eval_default_model_3seeds.json
    python bench/quality/eval_default_model.py --prompts 8 --samples 4 --eval-seeds 0 --out /tmp/eval.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from autodeco_samplers.frontends.cli.eval_cmd import add_eval_arguments, run_report, summary_lines  # noqa: E402
from bench._provenance import write_json  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_eval_arguments(p)
    p.set_defaults(eval_seeds=(0, 1, 2))
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "eval_default_model_3seeds.json"))
    args = p.parse_args(argv)
    report = run_report(args)
    out = write_json(args.out, report)
    print(summary_lines(report))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
