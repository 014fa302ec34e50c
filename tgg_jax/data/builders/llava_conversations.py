"""llava_conversations: any LLaVA-format JSON + its image folder -> records (SPEC §2).

Raw format: a JSON list of
`{"id", "image" (path under image_root; absent for text-only), "conversations": [{"from", "value"}],
"objects" (optional): [[x1, y1, x2, y2], ...] in original pixels, one per <object>}`.
Used for LLaVA-Pretrain-595K, LLaVA-v1.5-mix665K, ShareGPT4V and the grounding conversation /
description sets of stage 3 (SPEC §3). A config names the JSON file and image root under raw_dir;
other files: `tgg-data build llava_conversations --config NAME --set json_file=... --set
image_root=...` (a new NAME gives a new output directory).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import tensorflow_datasets as tfds
from etils import epath

from tgg_jax.data.builders import common


@dataclasses.dataclass
class LlavaConversationsConfig(tfds.core.BuilderConfig):
    """json_file and image_root are relative to raw_dir; all records go to `split`."""

    json_file: str = ""
    image_root: str = "."
    split: str = "train"


def _config(name: str, json_file: str, image_root: str, description: str):
    return LlavaConversationsConfig(name=name, json_file=json_file, image_root=image_root,
                                    description=description)


class LlavaConversations(common.RawDataBuilder):
    """LLaVA-format conversations (optionally with <object> boxes) and their images."""

    name = "llava_conversations"
    HOMEPAGE = "https://github.com/haotian-liu/LLaVA"
    BUILDER_CONFIGS = [
        _config("llava_pretrain", "chat.json", "images",
                "LLaVA-CC3M-Pretrain-595K: chat.json + images/ (stages 1a/1b)"),
        _config("llava_mix665k", "llava_v1_5_mix665k.json", ".",
                "LLaVA-v1.5-mix665K; images as coco/, gqa/, ocr_vqa/, textvqa/, vg/ under raw_dir"),
        _config("sharegpt4v", "sharegpt4v_mix665k_cap23k_coco-ap9k_lcs3k_sam9k_div2k.json", ".",
                "ShareGPT4V instruction mix; images under raw_dir"),
        _config("grounding_conversations", "grounding_conversations.json", ".",
                "GroundingGPT-style grounding conversations (stage 3)"),
        _config("grounding_descriptions", "grounding_descriptions.json", ".",
                "GroundingGPT-style grounding descriptions (stage 3)"),
    ]

    def _raw_splits(self, raw_dir: epath.Path) -> dict[str, list[common.Entry]]:
        config = self.builder_config
        path = raw_dir / config.json_file
        items = common.read_json(path, list)
        self._image_root = raw_dir / config.image_root
        entries = [common.Entry(_item_id(item, i), str(path), item) for i, item in enumerate(items)]
        return {config.split: entries}

    def _entry_records(self, split: str, entry: common.Entry):
        item, source = entry.data, entry.source
        if not isinstance(item, dict):
            raise common.Skip("malformed record", entry.id, source, "not a JSON object")
        image, width, height = b"", 0, 0
        if item.get("image"):
            if not isinstance(item["image"], str):
                raise common.Skip("malformed record", entry.id, source, "image is not a path")
            image, width, height = self.images.read(self._image_root / item["image"], entry.id)
        raw_objects = item.get("objects") or []
        if not isinstance(raw_objects, list):
            raise common.Skip("bad box", entry.id, source, "objects is not a list of boxes")
        if raw_objects and not image:
            raise common.Skip("bad box", entry.id, source, "objects given without an image")
        objects = [common.check_box(b, width, height, entry.id, source) for b in raw_objects]
        conversations = common.check_conversation(
            item.get("conversations"), entry.id, source,
            has_image=bool(image), num_objects=len(objects))
        yield common.make_record(record_id=entry.id, source=self.builder_config.name,
                                 conversations=conversations, image=image, width=width,
                                 height=height, objects=objects)


def _item_id(item: Any, index: int) -> str:
    """The record's "id", or its position in the file when it has none."""
    if isinstance(item, dict) and item.get("id") is not None:
        return str(item["id"])
    return f"#{index}"
