"""AutoDeco-aware ``MistralForCausalLM`` (stock unless config.json has an ``autodeco`` block)."""

from sglang.srt.models.mistral import MistralForCausalLM as _StockMistralForCausalLM

from autodeco_samplers.adapters.sglang.model_mixin import autodeco_model_class

MistralForCausalLM = autodeco_model_class(_StockMistralForCausalLM)

EntryClass = [MistralForCausalLM]
