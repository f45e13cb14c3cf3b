"""AutoDeco-aware vLLM ``Qwen2ForCausalLM`` (stock unless config.json has an ``autodeco`` block)."""

from vllm.model_executor.models.qwen2 import Qwen2ForCausalLM as _StockQwen2ForCausalLM

from autodeco_samplers.adapters.vllm.model_mixin import autodeco_model_class

Qwen2ForCausalLM = autodeco_model_class(_StockQwen2ForCausalLM)
