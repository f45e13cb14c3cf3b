"""SGLang's model registry resolves our classes under the stock architecture names.

Runs in a fresh interpreter because the registry reads ``SGLANG_EXTERNAL_MODEL_PACKAGE``
when ``sglang.srt.models.registry`` is first imported, as a server process does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

ARCHS = ["LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM", "Qwen3MoeForCausalLM", "GptOssForCausalLM"]

SCRIPT = """
import json, sys
from sglang.srt.models.registry import ModelRegistry
out = {}
for arch in sys.argv[1:]:
    cls, name = ModelRegistry.resolve_model_cls([arch])
    out[arch] = [cls.__module__, cls.__name__, name, [c.__module__ for c in cls.__bases__]]  # (AutoDecoModelMixin, stock class)
print("RESULT" + json.dumps(out))
"""


def _resolve(env_value, archs):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    env.pop("SGLANG_EXTERNAL_MODEL_PACKAGE", None)
    if env_value:
        env["SGLANG_EXTERNAL_MODEL_PACKAGE"] = env_value
    proc = subprocess.run([sys.executable, "-c", SCRIPT, *archs], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT")][-1]
    return json.loads(line[len("RESULT"):])


def test_external_package_resolves_our_classes_under_base_names():
    import autodeco_samplers.adapters.sglang as adapter

    got = _resolve(adapter.EXTERNAL_MODEL_PACKAGE, ARCHS + ["Gemma2ForCausalLM"])
    for arch in ARCHS:
        module, name, resolved, mro = got[arch]
        assert module.startswith("autodeco_samplers.adapters.sglang.models."), (arch, module)
        assert name == resolved == arch
        assert mro[0] == "autodeco_samplers.adapters.sglang.model_mixin"  # AutoDecoModelMixin
        assert mro[1].startswith("sglang.srt.models.")  # then the stock class
    # architectures we do not wrap still resolve to SGLang's own classes
    assert got["Gemma2ForCausalLM"][0].startswith("sglang.srt.models.")


PLUGIN_SCRIPT = """
import json
from autodeco_samplers.adapters.sglang.plugin import register
from sglang.srt.models.registry import ModelRegistry
register()
cls, name = ModelRegistry.resolve_model_cls(["Qwen3ForCausalLM"])
print("RESULT" + json.dumps([cls.__module__, name]))
"""


def test_plugin_register_overrides_stock_classes():
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    env.pop("SGLANG_EXTERNAL_MODEL_PACKAGE", None)
    proc = subprocess.run([sys.executable, "-c", PLUGIN_SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT")][-1]
    module, name = json.loads(line[len("RESULT"):])
    assert module == "autodeco_samplers.adapters.sglang.models.qwen3" and name == "Qwen3ForCausalLM"
