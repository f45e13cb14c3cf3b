"""The models this package ships, builds or finds: the embedded toy model
(:mod:`.default_model`), SmolLM2-135M-Instruct with its trained heads (:mod:`.smollm2`), tiny
seeded Llama/Qwen2 models for tests and demos (:mod:`.tiny_models`, never downloaded) and a
writer of llama.cpp model GGUFs from a transformers Llama folder (:mod:`.gguf_convert`)."""
