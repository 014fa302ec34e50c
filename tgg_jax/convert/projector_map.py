"""LLaVA mm_projector tensors <-> Projector parameters.

LLaVA-1.5 stores the mlp2x_gelu projector as nn.Sequential(Linear, GELU, Linear), so its tensors are
`0.weight`, `0.bias`, `2.weight`, `2.bias` under a `model.mm_projector.` prefix (stripped by the reader).
"""

from __future__ import annotations

from tgg_jax.convert.mapping import IDENTITY, LINEAR, Rule

PROJECTOR_TABLE: list[Rule] = [
    Rule("0.weight", "linear_1.kernel", LINEAR),
    Rule("0.bias", "linear_1.bias", IDENTITY),
    Rule("2.weight", "linear_2.kernel", LINEAR),
    Rule("2.bias", "linear_2.bias", IDENTITY),
]
