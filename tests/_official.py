"""The heads exactly as the reference AutoDeco project builds them (structure and forward
written from docs/design.md section 2 for these tests), so key names and shapes in our tests come
from a real ``torch.nn.Sequential``, not from our own writer."""

import torch
from torch import nn


class OfficialTempHead(nn.Module):
    def __init__(self, hidden_size):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(hidden_size, 256), nn.ReLU(), nn.Linear(256, 1), nn.Sigmoid())

    def forward(self, h):
        return self.mlp(h) * 2


class OfficialTopPHead(nn.Module):
    def __init__(self, hidden_size, use_enhanced_features=True):
        super().__init__()
        self.use_enhanced_features = use_enhanced_features
        self.mlp = nn.Sequential(
            nn.Linear(hidden_size + 1 + (4 if use_enhanced_features else 0), 256), nn.ReLU(), nn.Linear(256, 1), nn.Sigmoid()
        )

    def forward(self, h, T, logits):
        if not self.use_enhanced_features:
            return self.mlp(torch.cat([h, T], dim=-1))
        q = torch.softmax(logits / (T + 1e-8), dim=-1)
        stats = torch.cat(
            [
                q.max(dim=-1, keepdim=True)[0],
                -(q * torch.log(q + 1e-8)).sum(dim=-1, keepdim=True),
                q.var(dim=-1, keepdim=True),
                torch.topk(q, min(5, q.size(-1)), dim=-1)[0].sum(dim=-1, keepdim=True),
            ],
            dim=-1,
        )
        return self.mlp(torch.cat([h, T, stats], dim=-1))


class OfficialHeads(nn.Module):
    """Holds the two heads under the official attribute names."""

    def __init__(self, hidden_size, use_enhanced_features=True, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.temp_head = OfficialTempHead(hidden_size)
        self.top_p_head = OfficialTopPHead(hidden_size, use_enhanced_features)
        with torch.no_grad():  # spread the outputs over their range
            self.temp_head.mlp[2].weight.mul_(6)
            self.top_p_head.mlp[2].weight.mul_(6)

    @torch.no_grad()
    def predict(self, h, logits):
        T = self.temp_head(h)
        return T[..., 0], self.top_p_head(h, T, logits)[..., 0]


# --------------------------------------------------------------------------------------------
# What the official tools write, re-implemented for the tests from reading their layout
# (github Zacks917/AutoDeco: model/templlm_auto.py, script/construct_autodeco.py,
# script/merge_autodeco.py). Only the files, keys, config fields and index they produce are
# reproduced; none of their code is imported or copied.
# --------------------------------------------------------------------------------------------

import json
import shutil
from pathlib import Path

HEAD_PREFIXES = ("temp_head", "top_p_head")


def official_config(base_config: dict, base_path: str, *, enhanced: bool = True) -> dict:
    """``config.json`` of an official heads checkpoint: every field of the base config plus
    the AutoDeco fields; ``model_type`` "autodeco" and the AutoDeco architecture name; no
    ``base_architectures`` (the official config does not keep them)."""
    config = {k: v for k, v in base_config.items() if k not in ("architectures", "auto_map")}
    config.update(
        model_type="autodeco",
        architectures=["AutoDecoModelForCausalLM"],
        enable_temperature_head=True,
        enable_top_p_head=True,
        use_enhanced_features=enhanced,
        base_model_name_or_path=str(base_path),
        base_model_type=base_config["model_type"],
        temperature_hidden_size=base_config["hidden_size"],
        top_p_hidden_size=base_config["hidden_size"],
    )
    return config


def official_heads_folder(folder, base_dir, head_state: dict, *, enhanced: bool = True) -> Path:
    """What official training saves: ``config.json`` and ``model.safetensors`` holding only
    the head tensors (the base model's ``llm.*`` keys are skipped on save), in the heads'
    dtype; plus the tokenizer files."""
    from safetensors.torch import save_file

    folder, base_dir = Path(folder), Path(base_dir)
    folder.mkdir(parents=True, exist_ok=True)
    base_config = json.loads((base_dir / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(official_config(base_config, base_dir, enhanced=enhanced), indent=2))
    save_file({k: v.contiguous() for k, v in head_state.items()}, str(folder / "model.safetensors"), metadata={"format": "pt"})
    for f in base_dir.iterdir():
        if f.name.startswith("tokenizer") or f.name == "special_tokens_map.json":
            shutil.copy(f, folder / f.name)
    return folder


def official_merge(heads_dir, base_dir, out) -> Path:
    """The official ``merge``: the (sharded, indexed) base keeps its shard files with every key
    renamed ``llm.<key>``; the head tensors are appended to the last shard; the index's
    weight map is renamed the same way and gains the head keys (its ``total_size`` is left as
    it was); every ``*.json`` of the base is copied, then ``config.json`` is the heads'."""
    from safetensors.torch import load_file, save_file

    heads_dir, base_dir, out = Path(heads_dir), Path(base_dir), Path(out)
    index = json.loads((base_dir / "model.safetensors.index.json").read_text())
    shards = sorted(base_dir.glob("*.safetensors"))
    assert len(shards) > 1, "the official merge expects a sharded base model"
    heads = {}
    for f in sorted(heads_dir.glob("*.safetensors")):
        heads.update(load_file(str(f)))
    out.mkdir(parents=True, exist_ok=True)
    for f in base_dir.glob("*.json"):
        shutil.copy(f, out / f.name)
    shutil.copy(heads_dir / "config.json", out / "config.json")
    weight_map = {}
    for k, v in index["weight_map"].items():
        weight_map[f"llm.{k}" if not k.startswith(HEAD_PREFIXES) else k] = v
    for i, shard in enumerate(shards):
        state = {(k if k.startswith(HEAD_PREFIXES) else f"llm.{k}"): v for k, v in load_file(str(shard)).items()}
        if i == len(shards) - 1:
            state.update(heads)
            weight_map.update({k: shard.name for k in heads})
        save_file(state, str(out / shard.name), metadata={"format": "pt"})
    index["weight_map"] = weight_map
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=4))
    return out


def official_split(merged_dir, out) -> Path:
    """The official ``split``: the head tensors of every shard into ``model.safetensors``, and
    every ``*.json`` copied along, the merged folder's ``model.safetensors.index.json``
    included (stale: it lists the head tensors in a shard that is not there)."""
    from safetensors.torch import load_file, save_file

    merged_dir, out = Path(merged_dir), Path(out)
    heads = {}
    for f in sorted(merged_dir.glob("*.safetensors")):
        heads.update({k: v for k, v in load_file(str(f)).items() if k.startswith(HEAD_PREFIXES)})
    out.mkdir(parents=True, exist_ok=True)
    for f in merged_dir.glob("*.json"):
        shutil.copy(f, out / f.name)
    save_file(heads, str(out / "model.safetensors"))
    return out
