"""Checkpoint conversion between Hugging Face (PyTorch, safetensors) and tgg-jax (Orbax)."""
