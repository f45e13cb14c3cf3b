"""Helpers for the server tests: real ``autodeco serve`` subprocesses on 127.0.0.1 and their assets.

* :func:`chat_assets` copies the embedded default model (a tiny trained Llama with heads) into a
  temporary folder, gives its ``tokenizer_config.json`` a chat template (the model's *own*
  template, as a chat model ships it), converts that folder to GGUF (our converter carries the
  template into ``tokenizer.chat_template``) and exports the heads as a GGUF sidecar.
* :class:`Server` starts ``python -m autodeco_samplers serve ... --port 0 --json``, reads the
  port from the JSON line it prints, and stops it with SIGTERM (the server's graceful path).

Everything is built once per test session (module-level cache) and removed at exit.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional

import httpx

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)
MODEL = "tiny-chat"
PROMPT = "pick one of badger maroon donkey and spell it backwards:"
STARTUP_TIMEOUT = 180.0


@functools.lru_cache(maxsize=None)
def chat_assets() -> Dict[str, Path]:
    from autodeco_samplers.models import default_model
    from autodeco_samplers.models.gguf_convert import convert_llama_to_gguf
    from autodeco_samplers.heads.io.export import export_heads

    root = Path(tempfile.mkdtemp(prefix="autodeco-server-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    folder = root / "tiny-chat"
    shutil.copytree(default_model.base_path(), folder)
    config_file = folder / "tokenizer_config.json"
    config = json.loads(config_file.read_text(encoding="utf-8"))
    config["chat_template"] = CHAT_TEMPLATE
    config_file.write_text(json.dumps(config, indent=2), encoding="utf-8")
    return {
        "root": root,
        "folder": folder,
        "heads": default_model.heads_path(),
        "gguf": convert_llama_to_gguf(folder, root / "tiny-chat.gguf", dtype="f32"),
        "heads_gguf": export_heads(default_model.heads_path(), root / "heads.gguf")[1],
    }


def cli_env() -> Dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1]) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    return env


class Server:
    """One ``autodeco serve`` process on 127.0.0.1 (a free port chosen by the server itself)."""

    def __init__(self, args: List[str]) -> None:
        self.log = tempfile.NamedTemporaryFile(prefix="autodeco-serve-", suffix=".log", delete=False)
        cmd = [sys.executable, "-m", "autodeco_samplers", "serve", *args, "--port", "0", "--json"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.log, text=True, env=cli_env())
        line: List[str] = []
        reader = threading.Thread(target=lambda: line.append(self.proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(STARTUP_TIMEOUT)
        if not line or not line[0].strip():
            self.stop()
            raise RuntimeError(f"autodeco serve did not start: {self.stderr()[-3000:]}")
        info = json.loads(line[0])
        self.port = int(info["port"])
        self.url = f"http://127.0.0.1:{self.port}"
        self.info = info

    def stderr(self) -> str:
        return Path(self.log.name).read_text(encoding="utf-8", errors="replace")

    def client(self, **kwargs):
        import openai

        return openai.OpenAI(base_url=self.url + "/v1", api_key="unused", max_retries=0, timeout=120, **kwargs)

    def async_client(self, **kwargs):
        import openai

        return openai.AsyncOpenAI(base_url=self.url + "/v1", api_key="unused", max_retries=0, timeout=120, **kwargs)

    def post(self, path: str, body, *, raw: Optional[bytes] = None, timeout: float = 120) -> httpx.Response:
        content = raw if raw is not None else json.dumps(body).encode()
        return httpx.post(self.url + path, content=content, headers={"Content-Type": "application/json"}, timeout=timeout)

    def health(self) -> dict:
        return httpx.get(self.url + "/health", timeout=30).json()

    def alive(self) -> bool:
        return self.proc.poll() is None and self.health()["status"] == "ok"

    def wait_idle(self, timeout: float = 30.0) -> dict:
        """Poll /health until nothing runs or waits; returns the last answer."""
        deadline = time.monotonic() + timeout
        while True:
            h = self.health()
            if (h["running"] == 0 and h["queued"] == 0) or time.monotonic() > deadline:
                return h
            time.sleep(0.05)

    def stop(self, timeout: float = 30.0) -> Optional[int]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.log.close()
        return self.proc.returncode


def sse_lines(response: httpx.Response) -> List[str]:
    """The ``data:`` payloads of a server-sent-events response, in order."""
    return [line[len("data: "):] for line in response.iter_lines() if line.startswith("data: ")]


def generate_json(engine: str, model: Path, heads: Path, *, prompt: str, seed: int, max_new_tokens: int,
                  temperature: float = 1.0, top_p: float = 1.0, extra: Optional[List[str]] = None) -> dict:
    """``autodeco generate --engine ENGINE ... --json`` in a subprocess: the reference trace."""
    cmd = [sys.executable, "-m", "autodeco_samplers", "generate", "--engine", engine, "--model", str(model),
           "--heads", str(heads), "--prompt", prompt, "--seed", str(seed), "--max-new-tokens", str(max_new_tokens),
           "--temperature", str(temperature), "--top-p", str(top_p), "--threads", "1", "--json", *(extra or [])]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=cli_env())
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)
