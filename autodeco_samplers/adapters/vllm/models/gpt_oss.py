"""AutoDeco-aware vLLM ``GptOssForCausalLM`` (stock unless config.json has an ``autodeco`` block)."""

from vllm.model_executor.models.gpt_oss import GptOssForCausalLM as _StockGptOssForCausalLM

from autodeco_samplers.adapters.vllm.model_mixin import autodeco_model_class

GptOssForCausalLM = autodeco_model_class(_StockGptOssForCausalLM)
