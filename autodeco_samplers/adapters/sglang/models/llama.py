"""AutoDeco-aware ``LlamaForCausalLM`` (stock unless config.json has an ``autodeco`` block)."""

from sglang.srt.models.llama import LlamaForCausalLM as _StockLlamaForCausalLM

from autodeco_samplers.adapters.sglang.model_mixin import autodeco_model_class

LlamaForCausalLM = autodeco_model_class(_StockLlamaForCausalLM)

EntryClass = [LlamaForCausalLM]
