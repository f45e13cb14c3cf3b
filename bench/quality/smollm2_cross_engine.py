#!/usr/bin/env python
"""Cross-engine report on the real model: llama.cpp (Q4_1 GGUF as shipped) vs transformers
(the same weights dequantized to float32 by transformers' GGUF loader), same AutoDeco heads,
same token sequences. Writes bench/results/smollm2_cross_engine.json.

    python bench/quality/smollm2_cross_engine.py [--steps 24] [--seed 0] [--threads 2]

Per step: |dT|, |dP| of the used T and P, the total variation distance between the two
engines' AutoDeco distributions and between their plain softmaxes, argmax agreement
(autodeco_samplers/conformance/engines/smollm2.py, cross_engine_report). See docs/real_model.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from bench._provenance import write_json  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=24)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "smollm2_cross_engine.json"))
    args = p.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from autodeco_samplers.conformance.engines.smollm2 import DEFAULT_PROMPTS, cross_engine_report

    rep = cross_engine_report(DEFAULT_PROMPTS, steps=args.steps, seed=args.seed)
    rep["torch"] = torch.__version__
    write_json(args.out, rep)
    print(json.dumps(rep["summary"], indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
