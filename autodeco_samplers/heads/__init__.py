"""AutoDeco heads: loading any official checkpoint form, NumPy evaluation, a torch twin.

``load_heads`` and :class:`AutoDecoHeads` need only NumPy; :class:`AutoDecoHeadsModule`
(the torch ``nn.Module`` with ``from_pretrained`` / ``save_pretrained``) imports torch when
first used.
"""

from autodeco_samplers.heads.io.checkpoint import read_head_checkpoint
from autodeco_samplers.heads.model.config import HeadsConfig
from autodeco_samplers.heads.model.numpy_heads import FALLBACK_TEMPERATURE, FALLBACK_TOP_P, AutoDecoHeads, load_heads

__all__ = [
    "AutoDecoHeads",
    "AutoDecoHeadsModule",
    "HeadsConfig",
    "FALLBACK_TEMPERATURE",
    "FALLBACK_TOP_P",
    "load_heads",
    "read_head_checkpoint",
    "save_heads",
]


def __getattr__(name: str):
    if name == "AutoDecoHeadsModule":
        from autodeco_samplers.heads.model.torch_heads import AutoDecoHeadsModule

        return AutoDecoHeadsModule
    if name == "save_heads":
        from autodeco_samplers.heads.io.writer import save_heads

        return save_heads
    raise AttributeError(name)
