"""Dotted parameter names: how training patterns, checkpoints and the conversion tables name a
parameter of the nnx state ('llm.layers.3.self_attn.q_proj.kernel')."""

from __future__ import annotations


def tgg_path(name: str) -> tuple[str | int, ...]:
    """'layers.3.attn.q_proj.kernel' -> ('layers', 3, 'attn', 'q_proj', 'kernel') (nnx state path)."""
    return tuple(int(p) if p.isdigit() else p for p in name.split("."))


def tgg_name(path: tuple) -> str:
    """An nnx state path -> its dotted name."""
    return ".".join(str(getattr(p, "key", p)) for p in path)
