"""Benchmark and evaluation results store no machine's own folders (paths are relative to the
repository, :func:`autodeco_samplers.research.evaluation.toy.portable_path`)."""

from __future__ import annotations

import re
from pathlib import Path

from autodeco_samplers.research.evaluation.toy import portable_path

ROOT = Path(__file__).resolve().parents[1]
MACHINE_PATH = re.compile(r'"/(work|tmp|root|home|Users|private|var)/')


def test_results_json_holds_no_machine_paths():
    files = sorted((ROOT / "bench" / "results").glob("*.json"))
    assert files, "bench/results has no JSON files"
    offenders = [f.name for f in files if MACHINE_PATH.search(f.read_text(encoding="utf-8"))]
    assert not offenders, f"results with machine paths: {offenders}"


def test_portable_path_is_relative_inside_the_repository(tmp_path, monkeypatch):
    assert portable_path(ROOT / "autodeco_samplers" / "default_model" / "base") == "autodeco_samplers/models/default_model/base"
    monkeypatch.chdir(tmp_path)
    assert portable_path(tmp_path / "runs" / "heads") == "runs/heads"
    outside = portable_path(Path("/") / "somewhere" / "else" / "model")
    assert outside == ".../else/model" and not MACHINE_PATH.search(f'"{outside}"')
