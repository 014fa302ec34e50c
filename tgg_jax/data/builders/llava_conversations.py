"""llava_conversations: any LLaVA-format JSON + its image folder -> records (SPEC §2).

Raw format: a JSON list of
`{"id", "image" (path under image_root; absent for text-only), "conversations": [{"from", "value"}],
"objects" (optional): [[x1, y1, x2, y2], ...] in original pixels, one per <object>}`.

One config per dataset that the stage configs name (SPEC §3, the paper's Table 7):

    pretrain                  1a  LLaVA-Pretrain: chat.json (CC3M-595K) or
                                  blip_laion_cc_sbu_558k.json (LCS-558K), images/, as released
    pretrain_instruct         1b  the same, each caption asked with an instruction sampled
                                  (seeded, per record id) from BRIEF_CAPTION_INSTRUCTIONS
    image_box, text_image     2   the data engine's image–coordinate and text–image sets
                                  (`tgg-synth`, docs/data_engine.md)
    sharegpt4v_mix665k        3   ShareGPT4V's release of LLaVA-v1.5's 665K mixture
    mix665k                   3   LLaVA-v1.5-mix665K as LLaVA releases it (an alternative)
    grounding_conversations   3   the data engine's multi-round grounding conversations
    grounding_descriptions    3   the data engine's grounding descriptions

`raw_dir` is the release's root (LLaVA's `playground/data` for the mixtures). Images that live
elsewhere (the data engine's output points into a COCO or Flickr30K folder) come from the input
flag `--image_root`, which never changes the dataset's name. Other files: `tgg-data build
llava_conversations --config NAME --set name=NEW --set json_file=...`.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import tensorflow_datasets as tfds
from etils import epath

from tgg_jax.data.builders import base, checks, raw_entries, raw_json, records

# Stage 1b's caption instructions ("a sampled instruction that requires the model to provide a
# concise description of the image", paper §3.1), in the manner of LLaVA's brief-description list.
BRIEF_CAPTION_INSTRUCTIONS = (
    "Describe the image concisely.",
    "Provide a brief description of the given image.",
    "Offer a succinct explanation of the picture presented.",
    "Summarize the visual content of the image.",
    "Give a short and clear explanation of the subsequent image.",
    "Share a concise interpretation of the image provided.",
    "Present a compact description of the photo's key features.",
    "Relay a brief, clear account of the picture shown.",
    "Render a clear and concise summary of the photo.",
    "Write a terse but informative summary of the picture.",
    "Create a compact narrative representing the image presented.",
)


@dataclasses.dataclass
class LlavaConversationsConfig(tfds.core.BuilderConfig):
    """json_file (or, when it is absent, the first of json_alternatives that exists) and
    image_root are relative to raw_dir; all records go to `split`. instructions > "" replaces the
    first human turn's text with one of that list, chosen by (instruction_seed, record id)."""

    json_file: str = ""
    json_alternatives: tuple[str, ...] = ()
    image_root: str = "."
    split: str = "train"
    instructions: str = ""
    instruction_seed: int = 0


INSTRUCTION_LISTS = {"brief_caption": BRIEF_CAPTION_INSTRUCTIONS}
_PRETRAIN_FILES = ("chat.json", "blip_laion_cc_sbu_558k.json")


def _config(name: str, json_files, image_root: str, description: str, **kw):
    first, *others = (json_files,) if isinstance(json_files, str) else json_files
    return LlavaConversationsConfig(name=name, json_file=first, json_alternatives=tuple(others),
                                    image_root=image_root, description=description, **kw)


class LlavaConversations(base.RawDataBuilder):
    """LLaVA-format conversations (optionally with <object> boxes) and their images."""

    name = "llava_conversations"
    HOMEPAGE = "https://github.com/haotian-liu/LLaVA"
    BUILDER_CONFIGS = [
        _config("pretrain", _PRETRAIN_FILES, "images",
                "stage 1a: LLaVA-Pretrain as released (chat.json or blip_laion_cc_sbu_558k.json "
                "+ images/)"),
        _config("pretrain_instruct", _PRETRAIN_FILES, "images",
                "stage 1b: LLaVA-Pretrain with seeded brief-caption instructions",
                instructions="brief_caption", instruction_seed=0),
        _config("image_box", "image_box.json", ".",
                "stage 2: image-coordinate pairs from tgg-synth (--image_root: its images)"),
        _config("text_image", "text_image.json", ".",
                "stage 2: text-image pairs from tgg-synth (--image_root: its images)"),
        _config("sharegpt4v_mix665k", "sharegpt4v_mix665k_cap23k_coco-ap9k_lcs3k_sam9k_div2k.json",
                ".", "stage 3: ShareGPT4V's LLaVA-v1.5 mixture; raw_dir = playground/data"),
        _config("mix665k", "llava_v1_5_mix665k.json", ".",
                "LLaVA-v1.5-mix665K; raw_dir = playground/data (coco/, gqa/, ocr_vqa/, ...)"),
        _config("grounding_conversations", "grounding_conversations.json", ".",
                "stage 3: multi-round grounding conversations from tgg-synth"),
        _config("grounding_descriptions", "grounding_descriptions.json", ".",
                "stage 3: grounding descriptions from tgg-synth"),
    ]

    def _info(self) -> tfds.core.DatasetInfo:
        info = super()._info()
        config = self.builder_config
        if config.instructions:
            # What 1b asked, kept with the data: the list and the seed that picked from it.
            info._metadata = tfds.core.MetadataDict(
                instructions=list(INSTRUCTION_LISTS[config.instructions]),
                instruction_seed=config.instruction_seed)
        return info

    def _raw_splits(self, raw_dir: epath.Path) -> dict[str, list[raw_entries.Entry]]:
        config = self.builder_config
        candidates = [raw_dir / f for f in (config.json_file, *config.json_alternatives)]
        path = next((p for p in candidates if p.exists()), None)
        if path is None:
            raise FileNotFoundError(f"{self.name}/{config.name}: none of "
                                    f"{', '.join(map(str, candidates))} exists")
        items = raw_json.read_json(path, list)
        self._image_root = self.image_folder(raw_dir, config.image_root)
        entries = [raw_entries.Entry(_item_id(item, i), str(path), item) for i, item in enumerate(items)]
        return {config.split: entries}

    def _entry_records(self, split: str, entry: raw_entries.Entry):
        item, source = entry.data, entry.source
        if not isinstance(item, dict):
            raise raw_entries.Skip("malformed record", entry.id, source, "not a JSON object")
        image, width, height = b"", 0, 0
        if item.get("image"):
            if not isinstance(item["image"], str):
                raise raw_entries.Skip("malformed record", entry.id, source, "image is not a path")
            image, width, height = self.images.read(self._image_root / item["image"], entry.id)
        raw_objects = item.get("objects") or []
        if not isinstance(raw_objects, list):
            raise raw_entries.Skip("bad box", entry.id, source, "objects is not a list of boxes")
        if raw_objects and not image:
            raise raw_entries.Skip("bad box", entry.id, source, "objects given without an image")
        objects = [checks.check_box(b, width, height, entry.id, source) for b in raw_objects]
        conversations = checks.check_conversation(
            item.get("conversations"), entry.id, source,
            has_image=bool(image), num_objects=len(objects))
        if self.builder_config.instructions:
            conversations[0]["value"] = self.instruction(entry.id)
        yield records.make_record(record_id=entry.id, source=self.builder_config.name,
                                 conversations=conversations, image=image, width=width,
                                 height=height, objects=objects)

    def instruction(self, record_id: str) -> str:
        """The instruction of record `record_id`: fixed by the seed and the id alone, so a
        rebuild, a shard or another order picks the same one."""
        config = self.builder_config
        options = INSTRUCTION_LISTS[config.instructions]
        digest = hashlib.sha256(f"{config.instruction_seed}:{record_id}".encode()).digest()
        return options[int.from_bytes(digest[:8], "little") % len(options)]


def _item_id(item: Any, index: int) -> str:
    """The record's "id", or its position in the file when it has none."""
    if isinstance(item, dict) and item.get("id") is not None:
        return str(item["id"])
    return f"#{index}"
