"""AutoDeco model classes for vLLM, one module per stock architecture (importing one imports vLLM).

:data:`ARCHITECTURES` maps each architecture name to the ``module:Class`` the plugin registers
with ``ModelRegistry.register_model`` (lazily, so vLLM imports a module only when a
checkpoint of that architecture is loaded). Each class keeps the stock name and behaves
exactly like the stock class unless ``config.json`` carries an ``autodeco`` block.
"""

ARCHITECTURES = {
    "LlamaForCausalLM": "autodeco_samplers.adapters.vllm.models.llama:LlamaForCausalLM",
    "MistralForCausalLM": "autodeco_samplers.adapters.vllm.models.mistral:MistralForCausalLM",
    "Qwen2ForCausalLM": "autodeco_samplers.adapters.vllm.models.qwen2:Qwen2ForCausalLM",
    "Qwen3ForCausalLM": "autodeco_samplers.adapters.vllm.models.qwen3:Qwen3ForCausalLM",
    "Qwen3MoeForCausalLM": "autodeco_samplers.adapters.vllm.models.qwen3_moe:Qwen3MoeForCausalLM",
    "GptOssForCausalLM": "autodeco_samplers.adapters.vllm.models.gpt_oss:GptOssForCausalLM",
}
