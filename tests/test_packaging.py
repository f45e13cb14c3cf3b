"""One import root, the same from regular and editable installs; the core needs no torch."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_python(code, cwd, env=None):
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, env=env, capture_output=True, text=True)


def test_core_imports_and_loads_heads_without_torch(tmp_path):
    res = run_python(
        f"""
        import sys
        for name in ("torch", "transformers", "llama_cpp", "sglang"):
            sys.modules[name] = None  # any import of these now raises ImportError
        import autodeco_samplers as ad
        import autodeco_samplers.adapters, autodeco_samplers.conformance.checker
        from autodeco_samplers.heads.model.init import init_heads
        from autodeco_samplers.heads.io.writer import save_heads
        config, tensors = init_heads(12, width=4)
        save_heads({str(tmp_path / 'h')!r}, config, tensors)
        heads = ad.load_heads({str(tmp_path / 'h')!r})
        import numpy as np
        T, P = heads.predict(np.ones((2, 12), np.float32), np.zeros((2, 7), np.float32))
        print(ad.next_token_distribution(np.zeros(3), T[0], P[0]).sum())
        """,
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "1.0"


def test_importing_the_core_imports_no_engine(tmp_path):
    res = run_python(
        """
        import sys, autodeco_samplers, autodeco_samplers.adapters, autodeco_samplers.frontends.cli
        autodeco_samplers.frontends.cli.build_parser()
        print(sorted(m for m in ("torch", "transformers", "llama_cpp", "sglang", "gguf") if m in sys.modules))
        """,
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"


def test_no_generic_top_level_packages_are_installed(tmp_path):
    res = run_python(
        """
        import importlib.util
        print([n for n in ("heads", "adapters", "conformance") if importlib.util.find_spec(n)])
        """,
        cwd=tmp_path,
    )
    assert res.stdout.strip() == "[]", res.stdout + res.stderr


@pytest.mark.slow
def test_regular_install_maps_folders_into_the_root(tmp_path):
    target = tmp_path / "site"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-v", "--no-deps", "--no-build-isolation", "--target", str(target), str(ROOT)],
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, build.stderr
    # our pyproject gives setuptools nothing to warn about (license field, data folders)
    log = build.stdout + build.stderr
    for warning in ("SetuptoolsDeprecationWarning", "Package would be ignored", "License classifiers are deprecated",
                    "project.license` as a TOML table is deprecated"):
        assert warning not in log, warning
    assert (target / "autodeco_samplers" / "core" / "schemas" / "generation.schema.json").is_file()
    # the page `autodeco serve` answers at GET / (frontends/server/page.py): every served file ships
    from autodeco_samplers.frontends.server.page import FILES

    static = target / "autodeco_samplers" / "frontends" / "server" / "static"
    assert sorted(p.name for p in static.iterdir()) == sorted(FILES)
    assert all((static / name).read_bytes() == (ROOT / "autodeco_samplers" / "frontends" / "server" / "static" / name)
               .read_bytes() for name in FILES)
    assert not (target / "heads").exists() and not (target / "adapters").exists()
    env = dict(os.environ, PYTHONPATH=str(target))
    res = run_python(
        """
        import autodeco_samplers, autodeco_samplers.heads, autodeco_samplers.adapters, autodeco_samplers.conformance
        import autodeco_samplers.adapters.sglang, autodeco_samplers.research.training
        from autodeco_samplers.models import default_model
        assert autodeco_samplers.adapters.sglang.__file__.startswith(autodeco_samplers.__path__[0])
        assert (default_model.base_path() / "config.json").exists(), default_model.base_path()
        assert list(default_model.heads_path().glob("*.safetensors"))
        print(autodeco_samplers.heads.__file__)
        """,
        cwd=tmp_path,
        env=env,
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().startswith(str(target / "autodeco_samplers" / "heads"))


    # Python started in the repository root imports the root's autodeco_samplers/ folder (the
    # current directory comes first), not the installed copy: its sub-packages sit inside it,
    # so they import from there too. -S keeps an editable install of this venv out of the way.
    import numpy

    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(target), str(Path(numpy.__file__).parents[1])]))
    res = subprocess.run(
        [sys.executable, "-S", "-c", "import autodeco_samplers, autodeco_samplers.heads, autodeco_samplers.adapters.sglang, "
         "autodeco_samplers.conformance.engines; print(autodeco_samplers.__file__); print(autodeco_samplers.heads.__file__)"],
        cwd=ROOT, env=env, capture_output=True, text=True,
    )
    assert res.returncode == 0, res.stderr
    init_file, heads_file = res.stdout.split()
    assert init_file == str(ROOT / "autodeco_samplers" / "__init__.py")
    assert heads_file == str(ROOT / "autodeco_samplers" / "heads" / "__init__.py")


def test_importing_the_package_installs_no_import_hook(tmp_path):
    """Every sub-package sits physically inside autodeco_samplers/: importing it adds no finder
    to sys.meta_path, so tools see the real import graph, and no other top-level folder of the
    checkout (tests, scripts, docs, bench) becomes an autodeco_samplers.* module."""
    res = run_python(
        """
        import importlib.util, sys
        before = list(sys.meta_path)
        import autodeco_samplers, autodeco_samplers.heads, autodeco_samplers.adapters, autodeco_samplers.conformance
        print([type(f).__name__ for f in sys.meta_path if f not in before])
        print([n for n in ("tests", "scripts", "docs", "bench") if importlib.util.find_spec("autodeco_samplers." + n)])
        """,
        cwd=ROOT,
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.split("\n")[:2] == ["[]", "[]"]


def test_all_extra_holds_every_extra_that_needs_no_own_environment():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    spec = " ".join(extras["all"])
    included = set(spec.split("[", 1)[1].split("]", 1)[0].split(","))
    # dev is for contributors; sglang/vllm-style extras would need their own environment
    expected = {name for name in extras if name not in ("all", "dev") and not name.startswith(("sglang", "vllm"))}
    assert expected <= included, expected - included
    assert "conformance" in included
    assert any(r.startswith("jsonschema") for r in extras["conformance"])
    assert isinstance(project["license"], str)  # an SPDX expression, not the deprecated table
