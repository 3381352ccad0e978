"""Models and their forward passes: the model registry and conversion (GGUF -> safetensors), chat encoding, the packed
forward, generation and precision settings. May import: core, store."""
