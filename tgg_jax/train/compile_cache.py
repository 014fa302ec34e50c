"""JAX's persistent compilation cache: a second start of the same config loads its compiled
programs from disk instead of compiling them again (docs/reliability.md has the timings)."""

from __future__ import annotations

import os

import jax
from absl import logging


def enable(directory: str) -> str | None:
    """Cache compiled programs under `directory` ("" turns the cache off). Returns the directory
    in use; one that JAX already has (JAX_COMPILATION_CACHE_DIR, or an earlier call) is kept.
    Call it before anything compiles: JAX decides at its first compile whether to use a cache."""
    current = jax.config.jax_compilation_cache_dir
    if current:
        logging.info("compilation cache: %s", current)
        return current
    if not directory:
        logging.info("compilation cache: off")
        return None
    directory = os.path.abspath(os.path.expanduser(directory))
    os.makedirs(directory, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", directory)
    logging.info("compilation cache: %s", directory)
    return directory
