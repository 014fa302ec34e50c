"""Shared helpers of the tgg-synth tests: shapes images, the shapes config, a local server."""

from __future__ import annotations

import json
import pathlib

from configs.synth import default
from tgg_jax.synth import cli, shapes_server

PROMPTS = pathlib.Path(cli.REPO) / "configs/synth/prompts"
FAMILY_FILES = ("image_box", "text_image", "grounding_conversations", "grounding_descriptions")


def shapes_config(base_url: str, **overrides):
    """configs/synth/default.py:shapes against `base_url`, fast retries, then `overrides`."""
    c = default.get_config("shapes")
    c.mllm.base_url = base_url
    c.mllm.backoff_base_s = 0.01
    c.mllm.backoff_max_s = 0.05
    c.mllm.timeout_s = 5.0
    c.prompts.dir = str(PROMPTS)
    c.update_from_flattened_dict(overrides)
    return c


def make_images(path: pathlib.Path, count: int) -> pathlib.Path:
    shapes_server.write_images(path, count)
    return path


def merged(out: pathlib.Path) -> dict[str, list]:
    return {f: json.loads((out / f"{f}.json").read_text()) for f in FAMILY_FILES}
