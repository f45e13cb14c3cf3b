"""AutoDeco-aware vLLM ``MistralForCausalLM`` (stock unless config.json has an ``autodeco`` block)."""

from vllm.model_executor.models.mistral import MistralForCausalLM as _StockMistralForCausalLM

from autodeco_samplers.adapters.vllm.model_mixin import autodeco_model_class

MistralForCausalLM = autodeco_model_class(_StockMistralForCausalLM)
