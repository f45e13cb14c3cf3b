"""AutoDeco-aware vLLM ``Qwen3ForCausalLM`` (stock unless config.json has an ``autodeco`` block)."""

from vllm.model_executor.models.qwen3 import Qwen3ForCausalLM as _StockQwen3ForCausalLM

from autodeco_samplers.adapters.vllm.model_mixin import autodeco_model_class

Qwen3ForCausalLM = autodeco_model_class(_StockQwen3ForCausalLM)
