"""What a loaded set of heads is: :class:`HeadsConfig`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Optional, Tuple

from autodeco_samplers.heads.model.layout import FORMAT_VERSION


@dataclass(frozen=True)
class HeadsConfig:
    """Description of a pair of AutoDeco heads, as read from a checkpoint.

    Attributes:
        hidden_size: width ``H`` of the hidden state the heads read.
        use_enhanced_features: the top-p head also reads max prob, entropy, variance, top-5.
        enable_temperature_head / enable_top_p_head: whether each head predicts. A disabled
            head falls back to ``T = 1.0`` / ``P = 1.0`` (plain sampling for that knob).
        temperature_width / top_p_width: hidden width of each MLP (0 when disabled).
        base_model_name_or_path / base_model_type: the backbone the heads were trained on.
        source: where the heads were read from (file or folder).
        source_files: the files the head tensors came from.
    """

    hidden_size: int
    use_enhanced_features: bool = True
    enable_temperature_head: bool = True
    enable_top_p_head: bool = True
    temperature_width: int = 0
    top_p_width: int = 0
    base_model_name_or_path: Optional[str] = None
    base_model_type: Optional[str] = None
    source: Optional[str] = None
    source_files: Tuple[str, ...] = field(default_factory=tuple)

    @property
    def parameter_count(self) -> int:
        """Number of scalar parameters in the enabled heads."""
        count = 0
        if self.enable_temperature_head:
            count += self.temperature_width * (self.hidden_size + 2) + 1
        if self.enable_top_p_head:
            extra = 5 if self.use_enhanced_features else 1
            count += self.top_p_width * (self.hidden_size + extra + 2) + 1
        return count

    def to_official_config(self) -> Dict[str, Any]:
        """The ``config.json`` fields the official AutoDeco tools read for a heads-only folder."""
        return {
            "model_type": "autodeco",
            "architectures": ["AutoDecoModelForCausalLM"],
            "enable_temperature_head": self.enable_temperature_head,
            "enable_top_p_head": self.enable_top_p_head,
            "use_enhanced_features": self.use_enhanced_features,
            "base_model_name_or_path": self.base_model_name_or_path,
            "base_model_type": self.base_model_type,
            "hidden_size": self.hidden_size,
            "temperature_hidden_size": self.hidden_size,
            "top_p_hidden_size": self.hidden_size,
            "autodeco_samplers_format_version": FORMAT_VERSION,
        }

    def summary(self) -> Dict[str, Any]:
        """A JSON-friendly description (what ``autodeco inspect`` prints)."""
        out = asdict(self)
        out["source_files"] = list(self.source_files)
        out["parameter_count"] = self.parameter_count
        return out
