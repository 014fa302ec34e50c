"""TinyGroundingGPT in PyTorch, assembled from the Hugging Face parts `tgg-convert export-hf`
writes (SPEC §1):

    images (uint8) ─┬─ CLIPVisionModel ── hidden_states[select_layer][:, 1:] ─┐
                    └─ Dinov2Model ────── hidden_states[select_layer][:, 1:] ─┴─ concat ─ projector
    input_ids ── Qwen2 embeddings, placeholder runs overwritten in order by the projected rows
              ── Qwen2ForCausalLM ── logits

The same computation as tgg_jax.models.tgg.TinyGroundingGPT, written from the HF classes alone so
that a PyTorch user needs no JAX to run an exported model.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence

import numpy as np
import torch
import transformers
from safetensors.torch import load_file
from torch import nn

from tgg_jax.spec import IMAGE_TOKEN, OBJECT_TOKEN

CONFIG_FILE = "tgg_config.json"
EXPORT_FORMAT = "tgg-hf-export"


@dataclasses.dataclass(frozen=True)
class TGGExportConfig:
    """DIR/tgg_config.json: how the HF parts join (see tgg_jax.convert.export_hf)."""
    select_layer: int
    select_feature: str
    fusion: str
    object_pool: int
    image_pool: int
    image_token_id: int
    object_token_id: int
    image_tokens: int
    object_tokens: int
    image_size: int
    clip_mean: tuple[float, ...]
    clip_std: tuple[float, ...]
    dinov2_mean: tuple[float, ...]
    dinov2_std: tuple[float, ...]
    pad_fill: tuple[int, ...]
    object_margin: float
    dtype: str
    parts: dict

    @classmethod
    def from_file(cls, path: str) -> TGGExportConfig:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: missing (not a `tgg-convert export-hf` directory)")
        with open(path) as f:
            d = json.load(f)
        if d.get("format") != EXPORT_FORMAT:
            raise ValueError(f"{path}: format is {d.get('format')!r}, expected {EXPORT_FORMAT!r} "
                             f"(a tgg-jax checkpoint's tgg_config.json is not an export)")
        norm = d["normalization"]
        return cls(select_layer=d["select_layer"], select_feature=d["select_feature"],
                   fusion=d["fusion"], object_pool=d["object_pool"],
                   image_pool=d.get("image_pool", 1),
                   image_token_id=d["image_token_id"], object_token_id=d["object_token_id"],
                   image_tokens=d["image_tokens"], object_tokens=d["object_tokens"],
                   image_size=d["image_size"], clip_mean=tuple(norm["clip"]["mean"]),
                   clip_std=tuple(norm["clip"]["std"]), dinov2_mean=tuple(norm["dinov2"]["mean"]),
                   dinov2_std=tuple(norm["dinov2"]["std"]), pad_fill=tuple(d["pad_fill"]),
                   object_margin=d["object_margin"], dtype=d["dtype"], parts=d["parts"])


def mlp2x_gelu(in_features: int, out_features: int) -> nn.Sequential:
    """LLaVA-1.5's projector: Linear · GELU (erf) · Linear (SPEC §1); names 0.* and 2.*."""
    return nn.Sequential(nn.Linear(in_features, out_features), nn.GELU(),
                         nn.Linear(out_features, out_features))


def overwrite_placeholders(embeds: torch.Tensor, input_ids: torch.Tensor, token_id: int,
                           rows: torch.Tensor, what: str) -> torch.Tensor:
    """embeds [B, T, H] with the k-th `token_id` of each sequence replaced by rows[:, k].

    rows [B, R, H]; a sequence with more placeholders than R rows is an error (SPEC §1: never a
    silent shift). Fewer is allowed: batches pad the object images of shorter rows.
    """
    is_placeholder = input_ids == token_id
    counts = is_placeholder.sum(dim=1)
    if int(counts.max()) > rows.shape[1]:
        row = int(counts.argmax())
        raise ValueError(f"sequence {row} has {int(counts[row])} {what} placeholder tokens but only "
                         f"{rows.shape[1]} rows of {what} features were given")
    if rows.shape[1] == 0:
        return embeds
    rank = (is_placeholder.cumsum(dim=1) - 1).clamp(0, rows.shape[1] - 1)
    gathered = torch.gather(rows, 1, rank[..., None].expand(-1, -1, rows.shape[-1]))
    return torch.where(is_placeholder[..., None], gathered.to(embeds.dtype), embeds)


def _as_tensor(pixels, device) -> torch.Tensor | None:
    """uint8 images as numpy or torch -> a torch tensor on `device` (None stays None)."""
    if pixels is None:
        return None
    return torch.as_tensor(pixels if torch.is_tensor(pixels) else np.asarray(pixels), device=device)


def positions_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """[B, T] 1/0 mask of a left-padded batch -> positions 0.. on the real tokens (0 on pads), as
    tgg_jax.generate.left_pad gives; HF Qwen2 would otherwise count the pads."""
    return (attention_mask.long().cumsum(dim=-1) - 1).clamp(min=0)


class TinyGroundingGPT(nn.Module):
    """Qwen2ForCausalLM fed with CLIP + DINOv2 features projected into the placeholder runs."""

    def __init__(self, config: TGGExportConfig, llm: transformers.Qwen2ForCausalLM,
                 clip: transformers.CLIPVisionModel, dinov2: transformers.Dinov2Model,
                 projector: nn.Sequential):
        super().__init__()
        self.config = config
        self.llm, self.clip, self.dinov2, self.projector = llm, clip, dinov2, projector
        for name, values in (("clip_mean", config.clip_mean), ("clip_std", config.clip_std),
                             ("dinov2_mean", config.dinov2_mean), ("dinov2_std", config.dinov2_std)):
            self.register_buffer(name, torch.tensor(values, dtype=torch.float32), persistent=False)

    @classmethod
    def from_pretrained(cls, directory: str, dtype: torch.dtype | str | None = None,
                        **hf_kwargs) -> TinyGroundingGPT:
        """Load DIR/{llm, clip, dinov2, projector.safetensors, tgg_config.json}.

        dtype: torch dtype (or its name) of every part; default the exported one. hf_kwargs go to
        each part's from_pretrained (e.g. attn_implementation="eager").
        """
        config = TGGExportConfig.from_file(os.path.join(directory, CONFIG_FILE))
        dtype = getattr(torch, config.dtype) if dtype is None else dtype
        dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
        part = lambda name: os.path.join(directory, config.parts[name])  # noqa: E731
        llm = transformers.Qwen2ForCausalLM.from_pretrained(part("llm"), dtype=dtype, **hf_kwargs)
        clip = transformers.CLIPVisionModel.from_pretrained(part("clip"), dtype=dtype, **hf_kwargs)
        dinov2 = transformers.Dinov2Model.from_pretrained(part("dinov2"), dtype=dtype, **hf_kwargs)
        state = load_file(part("projector"))
        out_features, in_features = state["0.weight"].shape
        projector = mlp2x_gelu(in_features, out_features)
        projector.load_state_dict(state, strict=True)
        return cls(config, llm, clip, dinov2, projector.to(dtype)).eval()

    @property
    def grid(self) -> int:
        return self.config.image_size // self.clip.config.patch_size

    def _select(self, hidden_states: Sequence[torch.Tensor]) -> torch.Tensor:
        h = hidden_states[self.config.select_layer]
        if self.config.select_feature == "patch":
            return h[:, 1:]
        if self.config.select_feature == "cls_patch":
            return h
        raise ValueError(f"select_feature must be 'patch' or 'cls_patch', got {self.config.select_feature!r}")

    def visual_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 [N, S, S, 3] (padded, resized; SPEC §2) -> fused tower features [N, P, C]."""
        x = pixels.to(torch.float32) / 255.0
        clip_in = ((x - self.clip_mean) / self.clip_std).permute(0, 3, 1, 2).to(self.clip.dtype)
        dino_in = ((x - self.dinov2_mean) / self.dinov2_std).permute(0, 3, 1, 2).to(self.dinov2.dtype)
        c = self._select(self.clip(pixel_values=clip_in, output_hidden_states=True).hidden_states)
        d = self._select(self.dinov2(pixel_values=dino_in, output_hidden_states=True).hidden_states)
        return torch.cat([c, d.to(c.dtype)], dim=-1 if self.config.fusion == "channel" else 1)

    def _pool(self, feats: torch.Tensor, k: int) -> torch.Tensor:
        """k x k average pool on the patch grid: [N, P, C] -> [N, P/k², C]."""
        g = self.grid
        if k == 1:
            return feats
        n, p, c = feats.shape
        x = feats.reshape(n, p // (g * g), g // k, k, g // k, k, c).mean(dim=(3, 5))
        return x.reshape(n, -1, c)

    def embed_inputs(self, input_ids: torch.Tensor, images=None, objects=None) -> torch.Tensor:
        """Token embeddings [B, T, H] with the projected visual rows over the placeholder runs.

        input_ids [B, T]; images uint8 [B, Ni, S, S, 3] global images; objects uint8
        [B, No, S, S, 3] object crops (numpy or torch).
        """
        embeds = self.llm.get_input_embeddings()(input_ids)
        b, h = input_ids.shape[0], embeds.shape[-1]
        images, objects = _as_tensor(images, embeds.device), _as_tensor(objects, embeds.device)
        n_img = 0 if images is None else images.shape[1]
        n_obj = 0 if objects is None else objects.shape[1]
        s = self.config.image_size
        batches = [x.reshape(-1, s, s, 3) for x in (images, objects) if x is not None and x.shape[1]]
        feats = self.visual_features(torch.cat(batches)) if batches else None
        proj_dtype = self.projector[0].weight.dtype
        img_rows = embeds.new_zeros((b, 0, h))
        obj_rows = embeds.new_zeros((b, 0, h))
        if n_img:
            pooled = self._pool(feats[: b * n_img], self.config.image_pool)
            img_rows = self.projector(pooled.to(proj_dtype)).reshape(b, -1, h)
        if n_obj:
            pooled = self._pool(feats[b * n_img:], self.config.object_pool)
            obj_rows = self.projector(pooled.to(proj_dtype)).reshape(b, -1, h)
        embeds = overwrite_placeholders(embeds, input_ids, self.config.image_token_id, img_rows, IMAGE_TOKEN)
        return overwrite_placeholders(embeds, input_ids, self.config.object_token_id, obj_rows, OBJECT_TOKEN)

    def forward(self, input_ids: torch.Tensor, images=None, objects=None,
                attention_mask: torch.Tensor | None = None, **llm_kwargs):
        """The LLM's CausalLMOutputWithPast (`.logits` [B, T, V]) for left-padded input_ids [B, T]
        (attention_mask 1 on tokens, 0 on pads), images / objects as in `embed_inputs`."""
        embeds = self.embed_inputs(input_ids, images, objects)
        if attention_mask is not None and "position_ids" not in llm_kwargs:
            # The mask covers cached tokens too when decoding with past_key_values.
            llm_kwargs["position_ids"] = positions_from_mask(attention_mask)[:, -input_ids.shape[1]:]
        return self.llm(inputs_embeds=embeds, attention_mask=attention_mask, **llm_kwargs)

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, images=None, objects=None,
                 attention_mask: torch.Tensor | None = None, *, max_new_tokens: int = 64,
                 stop_ids: Sequence[int] | None = None, pad_id: int | None = None,
                 **generate_kwargs) -> torch.Tensor:
        """New tokens [B, max_new_tokens] (stop token kept, pad_id after it), greedy unless
        generate_kwargs say otherwise (do_sample, temperature, top_p, ...).

        stop_ids / pad_id default to the exported generation_config.json (<|im_end|>,
        <|endoftext|>), as tgg_jax.inference uses.
        """
        gen = self.llm.generation_config
        stop_ids = list(stop_ids) if stop_ids is not None else gen.eos_token_id
        pad_id = gen.pad_token_id if pad_id is None else pad_id
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        embeds = self.embed_inputs(input_ids, images, objects)
        generate_kwargs.setdefault("do_sample", False)
        out = self.llm.generate(inputs_embeds=embeds, attention_mask=attention_mask,
                                max_new_tokens=max_new_tokens, eos_token_id=stop_ids,
                                pad_token_id=pad_id, **generate_kwargs)
        if out.shape[1] < max_new_tokens:  # every row stopped early
            out = torch.nn.functional.pad(out, (0, max_new_tokens - out.shape[1]), value=pad_id)
        return out
