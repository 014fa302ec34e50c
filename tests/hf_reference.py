"""Tiny random Hugging Face parts of TinyGroundingGPT, saved offline, and an independent PyTorch
assembly of them (SPEC §1) that the JAX model must match.

The assembly is written here from the spec, on purpose separate from tgg_jax: towers ->
hidden_states[-2][:, 1:] -> concat(CLIP, DINOv2) -> Sequential(Linear, GELU, Linear) -> written
over the placeholder embeddings in order -> Qwen2ForCausalLM.
"""

from __future__ import annotations

import os

import numpy as np
import torch
import transformers
from safetensors.torch import save_file

IMAGE_ID, OBJECT_ID = 300, 301
VOCAB = 320
IMAGE_SIZE = 56  # 4 x 4 patches of 14 px

CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], np.float32)
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], np.float32)
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


def _perturb(model: torch.nn.Module, seed: int) -> None:
    """Random biases, norms and LayerScale, so that a wrong mapping of any of them shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))


def build_parts(tie: bool = True, seed: int = 0):
    torch.manual_seed(seed)
    llm = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        tie_word_embeddings=tie, rope_theta=1e6, rms_norm_eps=1e-6, attn_implementation="eager")).eval()
    clip = transformers.CLIPVisionModel(transformers.CLIPVisionConfig(
        hidden_size=48, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
        image_size=IMAGE_SIZE, patch_size=14, hidden_act="quick_gelu", attn_implementation="eager")).eval()
    dino = transformers.Dinov2Model(transformers.Dinov2Config(
        hidden_size=32, num_hidden_layers=3, num_attention_heads=4, mlp_ratio=2, image_size=98,
        patch_size=14, layerscale_value=1.0, attn_implementation="eager")).eval()
    projector = torch.nn.Sequential(torch.nn.Linear(48 + 32, 64), torch.nn.GELU(), torch.nn.Linear(64, 64))
    for i, m in enumerate((llm, clip, dino, projector)):
        _perturb(m, seed + i)
    return llm, clip, dino, projector


def save_parts(root: str, llm, clip, dino, projector) -> dict[str, str]:
    dirs = {k: os.path.join(root, k) for k in ("llm", "clip", "dinov2")}
    llm.save_pretrained(dirs["llm"])
    clip.save_pretrained(dirs["clip"])
    dino.save_pretrained(dirs["dinov2"])
    dirs["projector"] = os.path.join(root, "mm_projector.safetensors")
    save_file({f"model.mm_projector.{k}": v.contiguous() for k, v in projector.state_dict().items()},
              dirs["projector"])
    return dirs


def reference_logits(parts, input_ids: np.ndarray, images: np.ndarray, objects: np.ndarray) -> np.ndarray:
    """input_ids [B, T] with full placeholder runs; images / objects uint8 [B, N, S, S, 3]."""
    llm, clip, dino, projector = parts
    b = input_ids.shape[0]

    def features(pixels: np.ndarray) -> torch.Tensor:  # [N, S, S, 3] uint8 -> [N, P, 80]
        x = pixels.astype(np.float32) / 255.0
        c = torch.from_numpy(((x - CLIP_MEAN) / CLIP_STD).transpose(0, 3, 1, 2).copy())
        d = torch.from_numpy(((x - IMAGENET_MEAN) / IMAGENET_STD).transpose(0, 3, 1, 2).copy())
        fc = clip(pixel_values=c, output_hidden_states=True).hidden_states[-2][:, 1:]
        fd = dino(pixel_values=d, output_hidden_states=True).hidden_states[-2][:, 1:]
        return torch.cat([fc, fd], dim=-1)

    with torch.no_grad():
        ids = torch.from_numpy(input_ids.astype(np.int64))
        embeds = llm.get_input_embeddings()(ids).clone()
        img_rows = projector(features(images.reshape(-1, *images.shape[2:]))).reshape(b, -1, 64)
        obj_rows = projector(features(objects.reshape(-1, *objects.shape[2:]))).reshape(b, -1, 64)
        for row in range(b):
            for token, rows in ((IMAGE_ID, img_rows), (OBJECT_ID, obj_rows)):
                where = (ids[row] == token).nonzero().flatten()
                embeds[row, where] = rows[row, : len(where)]
        return llm(inputs_embeds=embeds).logits.numpy()


def example_inputs(seed: int = 0, batch: int = 2):
    """Sequences with an image run (16 tokens) early and an object run (16 tokens) later."""
    rng = np.random.default_rng(seed)
    t = 48
    ids = rng.integers(0, 299, size=(batch, t)).astype(np.int32)
    ids[:, 3:19] = IMAGE_ID
    ids[:, 25:41] = OBJECT_ID
    images = rng.integers(0, 256, size=(batch, 1, IMAGE_SIZE, IMAGE_SIZE, 3)).astype(np.uint8)
    objects = rng.integers(0, 256, size=(batch, 1, IMAGE_SIZE, IMAGE_SIZE, 3)).astype(np.uint8)
    return ids, images, objects
