"""The GGUF heads sidecar: bit-exact round trips, same predictions, clear errors, no torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from autodeco_samplers import load_heads
from autodeco_samplers.frontends.cli import main as cli_main
from autodeco_samplers.core.errors import CheckpointError
from autodeco_samplers.heads import read_head_checkpoint
from autodeco_samplers.heads.io.export import export_heads
from autodeco_samplers.heads.io.gguf_sidecar import SIDECAR_ARCHITECTURE, SIDECAR_FORMAT_VERSION, read_gguf_heads, write_gguf_heads
from autodeco_samplers.heads.model.init import init_heads
from autodeco_samplers.heads.io.writer import save_heads

pytest.importorskip("gguf")


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(),
        dict(use_enhanced_features=False),
        dict(enable_temperature_head=False),
        dict(enable_top_p_head=False),
    ],
)
def test_round_trip_is_bit_exact_and_predicts_the_same(tmp_path, kwargs):
    config, tensors = init_heads(48, width=24, seed=3, base_model_name_or_path="tiny/llama", **kwargs)
    folder = save_heads(tmp_path / "heads", config, tensors)
    cfg, out = export_heads(folder, tmp_path / "heads.gguf")
    cfg2, back = read_gguf_heads(tmp_path / "heads.gguf")
    _, original = read_head_checkpoint(folder)
    assert sorted(back) == sorted(original)
    for key in original:
        assert back[key].dtype == original[key].dtype and back[key].shape == original[key].shape
        assert back[key].tobytes() == original[key].tobytes(), key
    for field in ("hidden_size", "use_enhanced_features", "enable_temperature_head", "enable_top_p_head",
                  "temperature_width", "top_p_width", "base_model_name_or_path"):
        assert getattr(cfg2, field) == getattr(cfg, field), field
    rng = np.random.default_rng(0)
    h = rng.standard_normal((7, 48)).astype(np.float32)
    lg = (rng.standard_normal((7, 100)) * 4).astype(np.float32)
    T1, P1 = load_heads(folder).predict(h, lg)
    T2, P2 = load_heads(tmp_path / "heads.gguf").predict(h, lg)
    assert np.array_equal(T1, T2) and np.array_equal(P1, P2)


def test_float64_heads_stay_float64(tmp_path):
    config, tensors = init_heads(16, width=8, seed=1)
    t64 = {k: v.astype(np.float64) + 1e-12 for k, v in tensors.items()}
    write_gguf_heads(tmp_path / "h.gguf", config, t64)
    _, back = read_gguf_heads(tmp_path / "h.gguf")
    for k in t64:
        assert back[k].dtype == np.float64 and np.array_equal(back[k], t64[k])


def test_metadata_records_source_and_version(tmp_path):
    import gguf

    config, tensors = init_heads(16, width=8, seed=1)
    folder = save_heads(tmp_path / "src", config, tensors)
    export_heads(folder, tmp_path / "h.gguf")
    r = gguf.GGUFReader(str(tmp_path / "h.gguf"))
    assert r.fields["general.architecture"].contents() == SIDECAR_ARCHITECTURE
    assert r.fields["autodeco.format_version"].contents() == SIDECAR_FORMAT_VERSION == 2
    assert len(r.fields["autodeco.checksum"].contents()) == 64
    assert r.fields["autodeco.hidden_size"].contents() == 16
    assert r.fields["autodeco.temperature_width"].contents() == 8
    assert r.fields["autodeco.source_checkpoint"].contents() == str(folder)


def test_cli_export_heads_then_inspect(tmp_path, capsys):
    config, tensors = init_heads(16, width=8, seed=1)
    folder = save_heads(tmp_path / "src", config, tensors)
    assert cli_main(["export-heads", str(folder), "--out", str(tmp_path / "h.gguf")]) == 0
    assert "hidden_size=16" in capsys.readouterr().out
    assert cli_main(["inspect", str(tmp_path / "h.gguf"), "--json"]) == 0
    assert '"hidden_size": 16' in capsys.readouterr().out


@pytest.fixture
def sidecar(tmp_path) -> Path:
    config, tensors = init_heads(32, width=16, seed=2)
    return write_gguf_heads(tmp_path / "h.gguf", config, tensors)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="no such file"):
        load_heads(tmp_path / "nope.gguf")


def test_not_a_gguf(tmp_path):
    p = tmp_path / "x.gguf"
    p.write_bytes(b"PK\x03\x04 not gguf at all")
    with pytest.raises(CheckpointError, match="not a GGUF file"):
        load_heads(p)


@pytest.mark.parametrize("keep", [0.3, 0.9, 0.999])
def test_truncated_sidecar(sidecar, keep):
    data = sidecar.read_bytes()
    sidecar.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(CheckpointError, match="truncated|corrupt"):
        load_heads(sidecar)


def test_model_gguf_is_refused(tmp_path):
    import gguf

    w = gguf.GGUFWriter(str(tmp_path / "model.gguf"), "llama")
    w.add_block_count(1)
    w.add_tensor("token_embd.weight", np.zeros((4, 8), np.float32))
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
    with pytest.raises(CheckpointError, match="model GGUF .*'llama'.*not an AutoDeco heads sidecar"):
        load_heads(tmp_path / "model.gguf")


def test_missing_tensor(tmp_path):
    config, tensors = init_heads(32, width=16, seed=2)
    del tensors["top_p_head.mlp.2.bias"]
    write_gguf_heads(tmp_path / "h.gguf", config, tensors)
    with pytest.raises(CheckpointError, match=r"missing head tensor.*top_p_head\.mlp\.2\.bias"):
        load_heads(tmp_path / "h.gguf")


def test_wrong_shape(tmp_path):
    config, tensors = init_heads(32, width=16, seed=2)
    tensors["temp_head.mlp.2.weight"] = np.zeros((1, 15), np.float32)
    write_gguf_heads(tmp_path / "h.gguf", config, tensors)
    with pytest.raises(CheckpointError, match=r"temp_head\.mlp\.2\.weight.*shape"):
        load_heads(tmp_path / "h.gguf")


def test_newer_format_version_is_refused(tmp_path):
    import gguf

    config, tensors = init_heads(8, width=4, seed=2)
    w = gguf.GGUFWriter(str(tmp_path / "h.gguf"), SIDECAR_ARCHITECTURE)
    w.add_uint32("autodeco.format_version", 99)
    w.add_uint32("autodeco.hidden_size", 8)
    for k in ("use_enhanced_features", "enable_temperature_head", "enable_top_p_head"):
        w.add_bool("autodeco." + k, True)
    for k, v in tensors.items():
        w.add_tensor(k, v)
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
    with pytest.raises(CheckpointError, match="format version 99"):
        load_heads(tmp_path / "h.gguf")


def test_hidden_size_check_on_load(sidecar):
    from autodeco_samplers.core.errors import ShapeError

    with pytest.raises(ShapeError, match="hidden-size mismatch"):
        load_heads(sidecar, hidden_size=64)


def test_reading_a_sidecar_never_imports_torch(sidecar):
    code = (
        "import sys, numpy as np\n"
        "from autodeco_samplers import load_heads\n"
        f"h = load_heads({str(sidecar)!r})\n"
        "h.predict(np.zeros((1, 32), np.float32), np.zeros((1, 10), np.float32))\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_every_truncation_and_corruption_gives_a_clean_error(sidecar):
    """Cut the file at many points, or change any byte (header, metadata or tensor data): the
    read raises CheckpointError, or (for a byte nobody reads, e.g. inside ``general.name``)
    returns exactly the original heads. A corrupt file never reads as other heads."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from autodeco_samplers.heads.io.gguf_sidecar import scan_gguf_header

    data = sidecar.read_bytes()
    original_cfg, original = read_gguf_heads(sidecar)
    header_end = max(start for _, start, _ in scan_gguf_header(sidecar).tensors)
    cut = sidecar.with_name("cut.gguf")
    for n in list(range(0, header_end, 5)) + [len(data) - 1]:
        cut.write_bytes(data[:n])
        with pytest.raises(CheckpointError):
            read_gguf_heads(cut)

    accepted = []

    @settings(max_examples=300, deadline=None)
    @given(st.one_of(st.integers(4, header_end - 1), st.integers(header_end, len(data) - 1)), st.integers(0, 255))
    def flip(pos, byte):
        bad = bytearray(data)
        if bad[pos] == byte:
            return
        bad[pos] = byte
        cut.write_bytes(bytes(bad))
        try:
            cfg, tensors = read_gguf_heads(cut)
        except CheckpointError:
            return
        accepted.append(pos)
        for field in ("hidden_size", "use_enhanced_features", "enable_temperature_head", "enable_top_p_head",
                      "temperature_width", "top_p_width", "base_model_name_or_path", "base_model_type"):
            assert getattr(cfg, field) == getattr(original_cfg, field), (pos, field)
        assert sorted(tensors) == sorted(original)
        for key in original:
            assert tensors[key].dtype == original[key].dtype and np.array_equal(tensors[key], original[key]), (pos, key)

    flip()
