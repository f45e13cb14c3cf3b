"""AutoDeco-aware vLLM ``LlamaForCausalLM`` (stock unless config.json has an ``autodeco`` block)."""

from vllm.model_executor.models.llama import LlamaForCausalLM as _StockLlamaForCausalLM

from autodeco_samplers.adapters.vllm.model_mixin import autodeco_model_class

LlamaForCausalLM = autodeco_model_class(_StockLlamaForCausalLM)
