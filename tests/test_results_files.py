"""Benchmark and evaluation results: each says where it came from (a ``provenance`` block written
by ``bench/_provenance.py``), bench/README.md indexes every script and every result, docs cite
only results and scripts that exist, and no result stores a machine's own folders (paths are
relative to the repository, :func:`autodeco_samplers.research.evaluation.toy.portable_path`)."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from autodeco_samplers.research.evaluation.toy import portable_path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
INDEX = BENCH / "README.md"
MACHINE_PATH = re.compile(r'"/(work|tmp|root|home|Users|private|var)/')
MACHINE_PATH_IN_COMMAND = re.compile(r"(^|[\s='])/(work|tmp|root|home|Users|private|var)/")
SHA = re.compile(r"[0-9a-f]{40}")


def _results():
    files = sorted(RESULTS.glob("*.json"))
    assert files, "bench/results has no JSON files"
    return files


def _scripts():
    return sorted(p.relative_to(BENCH).as_posix() for p in BENCH.rglob("*.py") if "__pycache__" not in p.parts)


def _provenance_module():
    spec = importlib.util.spec_from_file_location("bench_provenance_under_test", BENCH / "_provenance.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_results_json_holds_no_machine_paths():
    offenders = [f.name for f in _results() if MACHINE_PATH.search(f.read_text(encoding="utf-8"))]
    assert not offenders, f"results with machine paths: {offenders}"


def test_portable_path_is_relative_inside_the_repository(tmp_path, monkeypatch):
    assert portable_path(ROOT / "autodeco_samplers" / "models" / "default_model" / "base") == "autodeco_samplers/models/default_model/base"
    monkeypatch.chdir(tmp_path)
    assert portable_path(tmp_path / "runs" / "heads") == "runs/heads"
    outside = portable_path(Path("/") / "somewhere" / "else" / "model")
    assert outside == ".../else/model" and not MACHINE_PATH.search(f'"{outside}"')


@pytest.mark.parametrize("path", _results(), ids=lambda p: p.name)
def test_every_result_records_command_commit_and_machine(path):
    data = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict), f"{path.name}: top level must be an object holding 'provenance'"
    prov = data.get("provenance")
    assert isinstance(prov, dict), f"{path.name}: no provenance block"
    assert list(data)[-1] == "provenance", f"{path.name}: provenance is not the last key"
    command = prov.get("command")
    assert isinstance(command, str) and command.strip(), f"{path.name}: no command"
    assert re.search(r"(^|\s)(bench/\S+\.py|autodeco)\s?", command), f"{path.name}: command names no bench script: {command!r}"
    assert not MACHINE_PATH_IN_COMMAND.search(command), f"{path.name}: machine path in command {command!r}"
    assert isinstance(prov.get("commit"), str) and SHA.fullmatch(prov["commit"]), f"{path.name}: commit {prov.get('commit')!r}"
    machine = prov.get("machine")
    assert isinstance(machine, dict) and machine, f"{path.name}: no machine"
    assert isinstance(prov.get("date"), str) and prov["date"][:4].isdigit(), f"{path.name}: no date"
    if prov.get("backfilled"):
        assert machine.get("description"), f"{path.name}: a backfilled machine needs a description"
        assert prov.get("source"), f"{path.name}: a backfilled block says where its command and machine come from"
    else:
        assert {"cpu", "cores", "gpu", "python", "torch"} <= set(machine), f"{path.name}: machine {machine}"
        assert isinstance(prov.get("dirty"), bool) or prov.get("dirty") is None


def test_result_commits_exist_in_the_repository():
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    commits = {json.loads(p.read_text(encoding="utf-8"))["provenance"]["commit"] for p in _results()}
    commits |= {json.loads(p.read_text(encoding="utf-8"))["provenance"].get("measured_at") for p in _results()} - {None}
    missing = [c for c in sorted(commits)
               if subprocess.run(["git", "-C", str(ROOT), "cat-file", "-e", f"{c}^{{commit}}"], capture_output=True).returncode]
    assert not missing, f"provenance names commits this repository does not have: {missing}"


def test_index_names_every_script_and_every_result():
    index = INDEX.read_text(encoding="utf-8")
    scripts = _scripts()
    assert "speed/bench_step.py" in scripts and "_provenance.py" in scripts
    assert not [s for s in scripts if f"`{s}`" not in index], "bench/README.md misses scripts"
    results = sorted(p.name for p in RESULTS.iterdir() if p.suffix in (".json", ".png"))
    assert not [r for r in results if f"`{r}`" not in index and f"results/{r}" not in index], "bench/README.md misses results"


def test_index_names_only_what_exists():
    index = INDEX.read_text(encoding="utf-8")
    named_scripts = set(re.findall(r"`((?:speed|quality|gpu)/\w+\.py)", index))
    assert named_scripts and not named_scripts - set(_scripts()), named_scripts - set(_scripts())
    named_results = set(re.findall(r"`(\w+\.(?:json|png))`", index))
    made_by_quick_runs = {n for n in named_results if re.search(r"_quick\.|_tiny\.", n)}
    assert not [n for n in named_results - made_by_quick_runs if not (RESULTS / n).is_file()]


def test_docs_cite_only_existing_results_and_scripts():
    cited = []
    for doc in sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]:
        text = doc.read_text(encoding="utf-8")
        cited += [(doc.name, p) for p in re.findall(r"bench/(?:results/\w+\.(?:json|png)|(?:speed|quality|gpu)/\w+\.py)", text)]
    assert cited
    assert not [(d, p) for d, p in cited if not (ROOT / p).is_file()], "docs cite missing bench files"


def test_provenance_command_is_relative_to_the_repository(tmp_path):
    prov = _provenance_module()
    argv = [str(BENCH / "speed" / "bench_step.py"), "--out", str(RESULTS / "x.json"), f"--plot={tmp_path / 'a' / 'b.png'}",
            "--quick", "two words"]
    command = prov.command_line(argv)
    assert command.split()[1:5] == ["bench/speed/bench_step.py", "--out", "bench/results/x.json", "--plot=.../a/b.png"]
    assert command.endswith("--quick 'two words'")
    assert not MACHINE_PATH_IN_COMMAND.search(command)
    with pytest.raises(ValueError, match="argv is empty"):
        prov.command_line([])


def test_write_json_adds_the_provenance_block_last(tmp_path, monkeypatch):
    prov = _provenance_module()
    monkeypatch.setattr(sys, "argv", [str(BENCH / "speed" / "bench_step.py"), "--quick"])
    path = prov.write_json(tmp_path / "sub" / "r.json", {"ratio": 1.25, "provenance": "stale"})
    data = json.loads(path.read_text(encoding="utf-8"))
    assert list(data) == ["ratio", "provenance"] and data["ratio"] == 1.25
    block = data["provenance"]
    assert block["command"].endswith("bench/speed/bench_step.py --quick")
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0:
        assert block["commit"] == head.stdout.strip() and isinstance(block["dirty"], bool)
    assert block["machine"]["cores"] >= 1 and block["machine"]["python"] == ".".join(map(str, sys.version_info[:3]))
    listed = json.loads(prov.write_json(tmp_path / "l.json", [{"vocab": 32000}]).read_text(encoding="utf-8"))
    assert listed["runs"] == [{"vocab": 32000}] and "provenance" in listed
    with pytest.raises(TypeError, match="dict or a list"):
        prov.write_json(tmp_path / "bad.json", "text")


def test_commit_comes_from_the_environment_without_git(monkeypatch):
    prov = _provenance_module()
    monkeypatch.setattr(prov, "_git", lambda *args: None)
    monkeypatch.setenv(prov.COMMIT_ENV, "a" * 40)
    assert prov.git_commit() == {"commit": "a" * 40, "dirty": None}
    monkeypatch.delenv(prov.COMMIT_ENV)
    assert prov.git_commit() == {"commit": None, "dirty": None}
