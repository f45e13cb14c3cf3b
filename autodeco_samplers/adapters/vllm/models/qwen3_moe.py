"""AutoDeco-aware vLLM ``Qwen3MoeForCausalLM`` (stock unless config.json has an ``autodeco`` block)."""

from vllm.model_executor.models.qwen3_moe import Qwen3MoeForCausalLM as _StockQwen3MoeForCausalLM

from autodeco_samplers.adapters.vllm.model_mixin import autodeco_model_class

Qwen3MoeForCausalLM = autodeco_model_class(_StockQwen3MoeForCausalLM)
