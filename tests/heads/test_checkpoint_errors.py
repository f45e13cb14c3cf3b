"""Every bad checkpoint or input gets a clear error naming the file, tensor or shape."""

import json
import pickle

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import autodeco_samplers as ad
from autodeco_samplers.frontends.cli import main as cli_main

from _official import OfficialHeads

H = 16


def good_state():
    return {k: v.contiguous() for k, v in OfficialHeads(H, True).state_dict().items()}


def write(tmp_path, state, config=None, name="autodeco_heads.safetensors"):
    folder = tmp_path / "ckpt"
    folder.mkdir(exist_ok=True)
    if config is not None:
        (folder / "config.json").write_text(json.dumps(config))
    save_file(state, str(folder / name))
    return folder


def test_hidden_size_mismatch_between_config_and_weights(tmp_path):
    folder = write(tmp_path, good_state(), {"hidden_size": H + 1})
    with pytest.raises(ad.ShapeError, match=r"hidden-size mismatch.*hidden_size=17.*temp_head.mlp.0.weight"):
        ad.load_heads(folder)


def test_hidden_size_mismatch_with_the_model(tmp_path):
    folder = write(tmp_path, good_state(), {"hidden_size": H})
    with pytest.raises(ad.ShapeError, match=r"model has hidden_size=32 .* expect 16"):
        ad.load_heads(folder, hidden_size=32)
    heads = ad.load_heads(folder)
    with pytest.raises(ad.ShapeError, match=r"hidden states have width 8 .* hidden_size=16"):
        heads.predict(np.zeros((2, 8), np.float32), np.zeros((2, 5), np.float32))
    with pytest.raises(ad.ShapeError, match="batch mismatch"):
        heads.predict(np.zeros((2, H), np.float32), np.zeros((3, 5), np.float32))
    with pytest.raises(ad.ShapeError, match="needs the logits"):
        heads.predict(np.zeros((2, H), np.float32))


def test_missing_head_tensor(tmp_path):
    state = good_state()
    del state["top_p_head.mlp.2.bias"]
    with pytest.raises(ad.CheckpointError, match=r"missing head tensor\(s\) \['top_p_head.mlp.2.bias'\]"):
        ad.load_heads(write(tmp_path, state, {"hidden_size": H}))


def test_extra_head_tensor(tmp_path):
    state = good_state()
    state["temp_head.mlp.4.weight"] = torch.zeros(1)
    with pytest.raises(ad.CheckpointError, match=r"unexpected head tensor\(s\) \['temp_head.mlp.4.weight'\]"):
        ad.load_heads(write(tmp_path, state))


def test_misshaped_head_tensor(tmp_path):
    state = good_state()
    state["temp_head.mlp.2.weight"] = torch.zeros(2, 256)
    with pytest.raises(ad.CheckpointError, match=r"'temp_head.mlp.2.weight'.*shape \[2, 256\], expected \[1, 256\]"):
        ad.load_heads(write(tmp_path, state))


def test_top_p_input_width_that_fits_no_feature_mode(tmp_path):
    state = good_state()
    state["top_p_head.mlp.0.weight"] = torch.zeros(256, H + 3)
    with pytest.raises(ad.ShapeError, match=r"top_p_head.mlp.0.weight.*must be 21 .* or 17"):
        ad.load_heads(write(tmp_path, state))


def test_feature_mode_contradicting_config(tmp_path):
    with pytest.raises(ad.CheckpointError, match="use_enhanced_features=False"):
        ad.load_heads(write(tmp_path, good_state(), {"use_enhanced_features": False}))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_weights(tmp_path, bad):
    state = good_state()
    state["top_p_head.mlp.0.bias"][3] = bad
    with pytest.raises(ad.CheckpointError, match=r"'top_p_head.mlp.0.bias' contains (NaN|inf)"):
        ad.load_heads(write(tmp_path, state))


def test_no_head_tensors_at_all(tmp_path):
    folder = write(tmp_path, {"model.embed_tokens.weight": torch.zeros(4, 4)})
    with pytest.raises(ad.CheckpointError, match="no AutoDeco head tensors"):
        ad.load_heads(folder)


class _Boom:
    """Unpickling this would create a marker file: proof that nothing was unpickled."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("suffix", [".bin", ".pt", ".pth"])
def test_pickle_checkpoints_are_refused_without_unpickling(tmp_path, suffix):
    marker = tmp_path / "was_unpickled"
    path = tmp_path / f"pytorch_model{suffix}"
    path.write_bytes(pickle.dumps(_Boom(marker)))
    with pytest.raises(ad.UnsafeCheckpointError, match="refused"):
        ad.load_heads(path)
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / path.name).write_bytes(path.read_bytes())
    with pytest.raises(ad.UnsafeCheckpointError, match="pickle"):
        ad.load_heads(folder)
    assert not marker.exists()


def test_torch_save_archive_renamed_to_safetensors_is_refused(tmp_path):
    path = tmp_path / "heads.safetensors"
    torch.save(good_state(), path)
    with pytest.raises(ad.UnsafeCheckpointError, match="pickle/zip"):
        ad.load_heads(path)


def test_not_a_safetensors_file(tmp_path):
    path = tmp_path / "heads.safetensors"
    path.write_bytes(b"GGUF this is something else entirely" * 3)
    with pytest.raises(ad.CheckpointError, match=r"heads.safetensors: not a safetensors file"):
        ad.load_heads(path)
    (tmp_path / "tiny.safetensors").write_bytes(b"abc")
    with pytest.raises(ad.CheckpointError, match="only 3 bytes"):
        ad.load_heads(tmp_path / "tiny.safetensors")


def test_truncated_file_names_the_tensor(tmp_path):
    folder = write(tmp_path, good_state())
    path = folder / "autodeco_heads.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])
    with pytest.raises(ad.CheckpointError, match=r"truncated: tensor '.*' needs bytes up to"):
        ad.load_heads(folder)


def test_missing_path_and_empty_folder(tmp_path):
    with pytest.raises(ad.CheckpointError, match="no such file or folder"):
        ad.load_heads(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ad.CheckpointError, match=r"no \*.safetensors file"):
        ad.load_heads(tmp_path / "empty")


def test_index_pointing_to_missing_shard(tmp_path, caplog):
    """A stale index (as the official split tool leaves it) loads the heads found in the folder,
    with one warning naming the missing shard; without the heads anywhere it is an error
    (tests/heads/test_official_folders.py)."""
    folder = write(tmp_path, good_state())
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"temp_head.mlp.0.weight": "gone.safetensors"}}))
    caplog.set_level("WARNING", logger="autodeco_samplers.heads.io.checkpoint")
    assert ad.load_heads(folder).config.hidden_size == H
    assert [r.getMessage().count("gone.safetensors") for r in caplog.records] == [1]


def test_nan_and_dead_logits_in_predict(tmp_path):
    heads = ad.load_heads(write(tmp_path, good_state()))
    logits = np.zeros((2, 5), np.float32)
    logits[1, 2] = np.nan
    with pytest.raises(ad.InvalidLogitsError, match=r"NaN \(row 1 of 2\)"):
        heads.predict(np.zeros((2, H), np.float32), logits)
    logits[1] = -np.inf
    with pytest.raises(ad.InvalidLogitsError, match="row 1 of 2 is all -inf"):
        heads.predict(np.zeros((2, H), np.float32), logits)


def test_cli_reports_errors_with_exit_code_1(tmp_path, capsys):
    (tmp_path / "model.bin").write_bytes(b"\x80\x04junk")
    assert cli_main(["inspect", str(tmp_path / "model.bin")]) == 1
    assert "refused" in capsys.readouterr().err


def test_bad_policy_values():
    for kwargs in ({"temperature": -1}, {"top_p": float("nan")}, {"min_temperature": 2, "max_temperature": 1}, {"fixed_top_p": 1.5}):
        with pytest.raises(ad.InvalidParameterError):
            ad.DecodingPolicy(**kwargs)
