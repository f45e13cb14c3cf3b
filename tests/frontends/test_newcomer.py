"""A newcomer's run, scripted: every ``autodeco`` command in README.md and every bad input a
newcomer typed, through the installed console script in a subprocess.

Asserts exit codes (0 done, 1 error, 2 usage), that an error is exactly one line on stderr
naming the problem (no traceback), that both engines answer the same bad input with the same
message, and that every engine's ``generate --json`` validates against the shipped JSON Schema.
README commands are read from README.md itself; their placeholders (``path/to/checkpoint``,
``model.gguf`` ...) are replaced by the embedded tiny model and files made here, and a few
flags are added to keep the run short. A README command with an unknown placeholder fails the
test, so README and test cannot drift apart.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
AUTODECO = str(Path(sys.executable).parent / "autodeco")
TASK_PROMPT = "pick one of badger maroon donkey and spell it backwards:"

transformers = pytest.importorskip("transformers")
llama_cpp = pytest.importorskip("llama_cpp")
jsonschema = pytest.importorskip("jsonschema")

from autodeco_samplers.models import default_model  # noqa: E402
from autodeco_samplers.core.interfaces import generation_schema  # noqa: E402


def autodeco(*args, cwd=None, env=None):
    return subprocess.run([AUTODECO, *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          env=None if env is None else {**os.environ, **env}, timeout=600)


def error_line(res, command: str) -> str:
    """The one stderr line of a failed command (asserting there is exactly one)."""
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one stderr line, got:\n{res.stderr}"
    assert lines[0].startswith(f"autodeco {command}: error: "), lines[0]
    assert "Traceback" not in res.stderr
    return lines[0]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The tiny files README commands and bad inputs need."""
    from autodeco_samplers.heads.io.export import export_heads
    from autodeco_samplers.heads.model.init import init_heads
    from autodeco_samplers.heads.io.merged import merge_checkpoint
    from autodeco_samplers.heads.io.writer import save_heads
    from autodeco_samplers.research.evaluation.toy_task import training_records, write_jsonl

    d = tmp_path_factory.mktemp("newcomer")
    export_heads(default_model.heads_path(), d / "default_heads.gguf")
    config, tensors = init_heads(48, width=4)  # the default model's hidden size is 64
    save_heads(d / "heads48", config, tensors)
    pickle_only = d / "pickle_only"
    pickle_only.mkdir()
    (pickle_only / "config.json").write_text((default_model.base_path() / "config.json").read_text())
    (pickle_only / "pytorch_model.bin").write_bytes(b"not unpickled")
    write_jsonl(training_records(default_model.task_spec(), 8), d / "train.jsonl")
    merged = merge_checkpoint(default_model.base_path(), default_model.heads_path(), d / "merged")
    return {
        "dir": d,
        "base": default_model.base_path(),
        "heads": default_model.heads_path(),
        "gguf": default_model.gguf_path(),
        "heads_gguf": d / "default_heads.gguf",
        "heads48": d / "heads48",
        "pickle_only": pickle_only,
        "train": d / "train.jsonl",
        "merged": merged,
    }


# --------------------------------------------------------------------------- README commands


def readme_commands():
    """Every ``autodeco ...`` line of README.md's bash blocks, continuations joined,
    comments and ``[optional]`` brackets removed."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    out = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].strip()
            if line.startswith("autodeco "):
                out.append(re.sub(r"\[([^\]]+)\]", r"\1", line))
    return out


def placeholders(files):
    d = files["dir"]
    return {
        "path/to/checkpoint": files["heads"],
        "path/to/autodeco-heads": files["heads"],
        "out/heads": d / "out_heads",
        "model.gguf": files["gguf"],
        "heads.gguf": d / "heads.gguf",
        "tiny-llama/": files["base"],
        "tiny.gguf": d / "tiny.gguf",
        "/models/AutoDeco-R1-Distill-Qwen-7B": files["merged"],
        "/models/autodeco-r1-sglang": d / "sglang_out",
        "/models/autodeco-r1-vllm": d / "vllm_out",
        "./my_hf_model": files["base"],
        "train.jsonl": files["train"],
        "./my_heads": d / "my_heads",
        "plots/": d / "plots",
    }


# flags set to keep each README command short (flag -> value, None for a switch)
SHORTER = {
    "train": {"--steps": "2", "--batch-size": "2", "--save-every": "0", "--quiet": None},
    "eval": {"--prompts": "1", "--samples": "2", "--temperatures": "1", "--top-ps": "1"},
    "conformance": {"--engines": "numpy", "--examples": "30"},
    "init-heads": {"--width": "8"},
}
KNOWN_VALUES = {"my/base", "Once upon a time"}  # values, not paths


def concrete(command: str, files) -> list:
    """README command -> argv: placeholders replaced, SHORTER flags set."""
    table = placeholders(files)
    out = []
    for a in shlex.split(command)[1:]:
        if a in table:
            out.append(str(table[a]))
            continue
        looks_like_path = "/" in a or a.endswith((".gguf", ".jsonl", ".safetensors"))
        assert not looks_like_path or a in KNOWN_VALUES, f"README command {command!r}: unknown placeholder {a!r}"
        out.append(a)
    for flag, value in SHORTER.get(out[0], {}).items():
        if flag in out:
            if value is not None:
                out[out.index(flag) + 1] = value
        else:
            out += [flag] + ([value] if value is not None else [])
    return out


def test_readme_lists_the_commands_this_test_runs():
    commands = readme_commands()
    seen = {shlex.split(c)[1] for c in commands}
    assert {"inspect", "init-heads", "export-heads", "generate", "convert-gguf", "prepare-sglang", "prepare-vllm", "train",
            "eval", "conformance"} <= seen, seen


def run_server_until_healthy(args, cwd) -> None:
    """``autodeco serve ...`` (README's port replaced by a free one): it answers /health, then
    stops cleanly (exit 0) on SIGTERM."""
    import signal
    import socket
    import time
    import urllib.request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    args = [str(port) if a == "8000" else str(a) for a in args]
    proc = subprocess.Popen([AUTODECO, *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 300
        while True:
            assert proc.poll() is None, f"autodeco serve exited with {proc.returncode}: {proc.stderr.read()[-2000:]}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.time() < deadline, "autodeco serve did not become healthy in 300 s"
            time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, proc.stderr.read()[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.slow
def test_every_readme_command_runs(files):
    """A few minutes on 2 cores: each README command, in README order, exits 0 (the server
    command: answers /health, then exits 0 on SIGTERM)."""
    schema = generation_schema()
    for command in readme_commands():
        args = concrete(command, files)
        if args[0] == "serve":
            run_server_until_healthy(args, files["dir"])
            continue
        res = autodeco(*args, cwd=files["dir"])
        assert res.returncode == 0, f"{command}\n-> {args}\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}"
        assert "Traceback" not in res.stderr, res.stderr
        if args[0] == "generate" and "--json" in args:
            jsonschema.validate(json.loads(res.stdout), schema)
        if args[0] == "conformance" and "--wrong-rules" in args:
            assert "verdict: all 2 wrong rules failed as expected" in res.stdout
            assert res.stdout.count("reproducer for wrong:") == 2


def test_demo_marks_every_answer_valid_or_invalid(files):
    res = autodeco("demo", "--no-eval", "--max-new-tokens", "12", "--seed", "1")
    assert res.returncode == 0, res.stderr
    answers = [line for line in res.stdout.splitlines() if line.startswith("answer: ")]
    assert len(answers) == 2, res.stdout  # one per engine
    for line in answers:
        assert line.startswith(("answer: valid: ", "answer: invalid: ")), line


# --------------------------------------------------------------------------- one schema


@pytest.mark.slow
def test_every_engine_output_validates_against_the_schema(files):
    """About a minute on 2 cores (six generations, each in a fresh process)."""
    schema = generation_schema()
    common = ["--prompt", TASK_PROMPT, "--seed", "0", "--json"]
    outs = {}
    for engine, model, heads in (("transformers", files["base"], files["heads"]),
                                 ("llama-cpp", files["gguf"], files["heads_gguf"])):
        for extra in ([], ["--stop=->"], ["--max-new-tokens", "2"]):
            res = autodeco("generate", "--engine", engine, "--model", model, "--heads", heads, *common, *extra)
            assert res.returncode == 0, res.stderr
            assert res.stderr == "", res.stderr  # nothing but the JSON: no progress bars, no notes
            out = json.loads(res.stdout)
            jsonschema.validate(out, schema)
            assert len(out["steps"]) == len(out["token_ids"])
            assert [s["token_id"] for s in out["steps"]] == out["token_ids"]
            outs[engine, tuple(extra)] = out
    for engine in ("transformers", "llama-cpp"):
        plain = outs[engine, ()]
        # the task's answers end with EOS: in token_ids, never in text
        assert plain["finish_reason"] == "eos" and plain["token_ids"][-1] == 0, plain
        assert "<" not in plain["text"] and plain["text"].strip(), plain["text"]
        assert outs[engine, ("--stop=->",)]["finish_reason"] == "stop"
        assert "->" not in outs[engine, ("--stop=->",)]["text"]
        short = outs[engine, ("--max-new-tokens", "2")]
        assert short["finish_reason"] == "length" and len(short["token_ids"]) == 2
    # same prompt ids on both engines (same tokenizer)
    assert outs["transformers", ()]["prompt_ids"] == outs["llama-cpp", ()]["prompt_ids"]


def test_schema_rejects_what_it_must():
    schema = generation_schema()
    good = {"engine": "x", "prompt_ids": [1], "token_ids": [2], "text": "a", "finish_reason": "eos",
            "steps": [{"token_id": 2, "T_pred": 0.5, "P_pred": 0.9, "T": 0.5, "P": 0.9}]}
    jsonschema.validate(good, schema)
    for bad in ({**good, "finish_reason": None}, {**good, "finish_reason": "done"},
                {k: v for k, v in good.items() if k != "finish_reason"}, {**good, "extra": 1},
                {**good, "steps": [{"token_id": 2, "T_pred": 0.5, "P_pred": 1.5, "T": 0.5, "P": 0.9}]}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)


# --------------------------------------------------------------------------- bad input


def both_engines(files, *args):
    """The same request on both engines; returns {engine: CompletedProcess}."""
    return {
        "transformers": autodeco("generate", "--engine", "transformers", "--model", files["base"], "--heads", files["heads"], *args),
        "llama-cpp": autodeco("generate", "--engine", "llama-cpp", "--model", files["gguf"], "--heads", files["heads_gguf"], *args),
    }


@pytest.mark.parametrize(
    "args, code, needle",
    [
        (["--prompt", "hi", "--max-new-tokens", "-1"], 2, "--max-new-tokens: must be at least 1, got -1"),
        (["--prompt", "hi", "--max-new-tokens", "0"], 2, "--max-new-tokens: must be at least 1, got 0"),
        (["--prompt-ids", "1,2,999999"], 1, "prompt token id 999999 is outside the model's vocabulary [0, "),
        (["--prompt-ids="], 2, "--prompt-ids: expected comma-separated token ids"),
        (["--prompt-ids", "1,x"], 2, "'x' is not a token id"),
        (["--prompt="], 2, "--prompt is empty"),
    ],
)
def test_bad_generate_input_gets_the_same_one_line_answer_on_every_engine(files, args, code, needle):
    results = both_engines(files, *args)
    lines = {}
    for engine, res in results.items():
        assert res.returncode == code, (engine, res.stderr)
        lines[engine] = error_line(res, "generate")
        assert needle in lines[engine], lines[engine]
    assert lines["transformers"] == lines["llama-cpp"]


def test_heads_that_do_not_fit_the_model(files):
    results = {
        "transformers": autodeco("generate", "--engine", "transformers", "--model", files["base"], "--heads", files["heads48"], "--prompt", "hi"),
        "llama-cpp": autodeco("generate", "--engine", "llama-cpp", "--model", files["gguf"], "--heads", files["heads48"], "--prompt", "hi"),
    }
    lines = {e: error_line(r, "generate") for e, r in results.items()}
    assert all(r.returncode == 1 for r in results.values())
    assert lines["transformers"] == lines["llama-cpp"]
    assert "hidden_size=48" in lines["transformers"] and "hidden size 64" in lines["transformers"]


def test_a_model_folder_with_only_pytorch_model_bin(files):
    res = autodeco("generate", "--engine", "transformers", "--model", files["pickle_only"], "--heads", files["heads"], "--prompt", "hi")
    assert res.returncode == 1
    line = error_line(res, "generate")
    assert "pytorch_model.bin" in line and "never unpickles" in line
    # the same folder for training: refused before torch is loaded
    res = autodeco("train", "--model", files["pickle_only"], "--data", files["train"], "--out", files["dir"] / "t")
    assert res.returncode == 1 and "pytorch_model.bin" in error_line(res, "train")


def test_unknown_conformance_engine_is_a_usage_error():
    res = autodeco("conformance", "--engines", "nonsense")
    assert res.returncode == 2
    line = error_line(res, "conformance")
    assert "unknown engine 'nonsense'" in line and "numpy" in line


def test_f32_kv_cache_with_transformers_is_a_usage_error(files):
    res = autodeco("generate", "--engine", "transformers", "--model", files["base"], "--heads", files["heads"],
                   "--prompt", "hi", "--f32-kv-cache")
    assert res.returncode == 2
    assert "--f32-kv-cache applies to --engine llama-cpp only" in error_line(res, "generate")


def test_a_missing_extra_names_the_extra(tmp_path):
    """hypothesis is blocked (as if not installed): conformance says which extra to install."""
    (tmp_path / "sitecustomize.py").write_text("import sys\nsys.modules['hypothesis'] = None\n")
    res = autodeco("conformance", "--engines", "numpy", "--levels", "kernel",
                   env={"PYTHONPATH": str(tmp_path) + os.pathsep + os.environ.get("PYTHONPATH", "")})
    assert res.returncode == 1
    line = error_line(res, "conformance")
    assert "pip install 'autodeco-samplers[conformance]'" in line and "'hypothesis'" in line


def test_debug_shows_the_traceback(files):
    res = autodeco("--debug", "generate", "--engine", "transformers", "--model", files["base"], "--heads",
                   files["heads48"], "--prompt", "hi")
    assert res.returncode == 1 and "Traceback" in res.stderr
    assert res.stderr.strip().splitlines()[-1].startswith("autodeco generate: error: hidden-size mismatch")
    res = autodeco("generate", "--engine", "llama-cpp", "--model", files["gguf"], "--heads", files["heads48"],
                   "--prompt", "hi", env={"AUTODECO_DEBUG": "1"})
    assert res.returncode == 1 and "Traceback" in res.stderr


def test_a_missing_model_folder(files):
    res = autodeco("generate", "--engine", "transformers", "--model", files["dir"] / "nope", "--heads", files["heads"], "--prompt", "hi")
    assert res.returncode == 1
    assert "no such model folder" in error_line(res, "generate")


# --------------------------------------------------------------------------- what the demo and eval say


def test_the_demo_says_why_an_answer_is_wrong():
    from autodeco_samplers.frontends.cli.demo_cmd import judge_answer, prompt_options

    options = prompt_options(TASK_PROMPT)
    assert options == ("badger", "maroon", "donkey")
    assert prompt_options("Once upon a time") is None  # not a task prompt: not judged
    assert judge_answer(" donkey -> y e k n o d", options) == (
        True, "valid: 'donkey' is a listed word and 'y e k n o d' spells it backwards")
    ok, why = judge_answer(" xyz -> z y x", options)
    assert not ok and why == "invalid: 'xyz' is not one of the listed words (badger, maroon, donkey)"
    ok, why = judge_answer(" donkey -> y e k n", options)
    assert not ok and why == "invalid: 'y e k n' does not spell 'donkey' backwards (expected 'y e k n o d')"
    ok, why = judge_answer(" donkey", options)
    assert not ok and why.startswith("invalid: ' donkey' is not of the form")


def _row(name, group, accuracy, diversity, *, oracle=False):
    return {"name": name, "group": group, "T": 1.0, "P": 1.0, "accuracy": accuracy, "accuracy_se": 0.01,
            "derive_accuracy": accuracy, "valid_choice": 1.0, "diversity": diversity, "score": accuracy * diversity,
            "oracle": oracle}


def test_the_eval_table_shows_every_static_point_that_dominates_autodeco():
    """A dominating grid point off the frontier used to be named in the summary but left out of
    the short table; every named point is now a row, marked."""
    from autodeco_samplers.research.evaluation.toy import format_table

    report = {
        "strategies": [
            _row("greedy", "greedy", 0.9, 0.0), _row("default", "default", 0.5, 0.9),
            _row("static T=0.5 P=0.9", "grid", 0.95, 0.8, oracle=True),  # on the frontier
            _row("static T=0.7 P=0.9", "grid", 0.93, 0.75),  # off the frontier, dominates AutoDeco
            _row("static T=1.5 P=1.0", "grid", 0.2, 0.2),  # neither: stays out of the short table
            _row("mean-static", "mean_static", 0.9, 0.7), _row("autodeco", "autodeco", 0.9, 0.7),
        ],
        "static_frontier": ["greedy", "static T=0.5 P=0.9", "default"],
        "autodeco_dominated_by": ["static T=0.5 P=0.9", "static T=0.7 P=0.9"],
        "autodeco_beyond_frontier": False,
        "settings": {"n_prompts": 1, "n_samples": 2, "seed": 0},
        "diversity_ceiling": 0.9,
    }
    table = format_table(report, only_key=True)
    for name in report["autodeco_dominated_by"]:
        line = next(line for line in table.splitlines() if line.startswith(name))
        assert "dominates AutoDeco" in line
    assert "static T=1.5 P=1.0" not in table
    assert "dominated by 2 static" in table
