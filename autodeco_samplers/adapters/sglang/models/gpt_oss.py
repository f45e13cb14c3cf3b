"""AutoDeco-aware ``GptOssForCausalLM`` (stock unless config.json has an ``autodeco`` block)."""

from sglang.srt.models.gpt_oss import GptOssForCausalLM as _StockGptOssForCausalLM

from autodeco_samplers.adapters.sglang.model_mixin import autodeco_model_class

GptOssForCausalLM = autodeco_model_class(_StockGptOssForCausalLM)

EntryClass = [GptOssForCausalLM]
