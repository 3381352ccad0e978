"""Models and their forward passes: the model registry and conversion (GGUF -> safetensors), chat encoding, the packed
forward, generation and precision settings, cross-tokenizer alignment. May import: core, store, data."""
