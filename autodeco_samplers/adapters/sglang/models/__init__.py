"""SGLang external model package: ``SGLANG_EXTERNAL_MODEL_PACKAGE=autodeco_samplers.adapters.sglang.models``.

SGLang's registry imports every module of this package and registers each ``EntryClass``
under its class name: ``LlamaForCausalLM``, ``Qwen2ForCausalLM``, ``Qwen3ForCausalLM``,
``Qwen3MoeForCausalLM``, ``GptOssForCausalLM`` (the stock names, so every architecture check
in SGLang still matches). Each behaves exactly like the stock class unless ``config.json``
carries an ``autodeco`` block. Importing a module here imports SGLang.
"""
