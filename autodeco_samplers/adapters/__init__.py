"""Engine adapters, one module per engine; each imports its engine only when used.

* :mod:`autodeco_samplers.adapters.transformers`: Hugging Face ``generate()``.
* :mod:`autodeco_samplers.adapters.llama_cpp`: llama.cpp through llama-cpp-python.
* :mod:`autodeco_samplers.adapters.vllm`: a plugin into stock vLLM (model classes, per-request knobs).
* :mod:`autodeco_samplers.adapters.sglang`: SGLang model classes.

Each adapter's conformance-suite engine lives in its own ``conformance`` module.
"""
