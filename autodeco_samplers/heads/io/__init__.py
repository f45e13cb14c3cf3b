"""Head checkpoints on disk: detection, the validating safetensors reader, the GGUF sidecar,
the heads-only writer, merge/split of merged folders, export, and the served-folder format
the serving engines (SGLang, vLLM) load."""
