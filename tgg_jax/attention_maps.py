"""Where the model looks when it writes an object (paper §5.2, Fig. 5): the LLM's last-layer
attention from an object representation (answer text, coordinates, or an `<object>` image run)
to the image patches, summed over heads and query tokens, normalised, and laid over the image.

    result = attention_map(model, tokenizer, image_bytes, question, answer, query="answer")
    result.heatmap                  # [g, g] in [0, 1], row-major image tokens (patches, or k x k
                                    # pooled patches with image_pool k) of the padded image
    overlay_heatmap(result.image, result.heatmap)   # the padded image with the heatmap over it

The model computes attention with jax.nn.dot_product_attention, which returns no weights, so the
last layer's softmax(QKᵀ/√d) is recomputed here from that layer's input, using its own
submodules (norm, q/k projections, rotary), the same masking rule and positions as the model.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from PIL import Image

from tgg_jax.data.coords import pad_offset
from tgg_jax.data.example_spec import for_model
from tgg_jax.data.preprocess import expand_to_square, load_image
from tgg_jax.data.template import encode_conversation
from tgg_jax.data.tokenizer import TggTokenizer
from tgg_jax.inference import prompt_inputs
from tgg_jax.models import stacked
from tgg_jax.models.attention import Attention, attention_mask
from tgg_jax.models.qwen2 import Qwen2
from tgg_jax.models.rope import apply_rotary, rotary_tables
from tgg_jax.models.tgg import TinyGroundingGPT
from tgg_jax.spec import OBJECT_MARGIN, OBJECT_TOKEN


def attention_probabilities(attn: Attention, x: jax.Array, cos: jax.Array, sin: jax.Array,
                            mask: jax.Array) -> jax.Array:
    """softmax(QKᵀ/√d) of one attention layer in float32.

    x [B, T, D] (the layer's normed input), rotary tables [B, T, head_dim], mask [B, 1, T, T]
    -> [B, heads, T, T]; row q is query q's distribution over the keys.
    """
    b, t, _ = x.shape
    q = apply_rotary(attn.q_proj(x).reshape(b, t, attn.num_heads, attn.head_dim), cos, sin)
    k = apply_rotary(attn.k_proj(x).reshape(b, t, attn.num_kv_heads, attn.head_dim), cos, sin)
    # GQA: query head h reads kv head h // group (HF's repeat_kv; dot_product_attention agrees).
    k = jnp.repeat(k, attn.num_heads // attn.num_kv_heads, axis=2)
    scores = jnp.einsum("bqhd,bkhd->bhqk", q.astype(jnp.float32), k.astype(jnp.float32))
    scores = jnp.where(mask, scores / math.sqrt(attn.head_dim), jnp.finfo(jnp.float32).min)
    return jax.nn.softmax(scores, axis=-1)


def decoder_attention(llm: Qwen2, inputs_embeds: jax.Array, positions: jax.Array,
                      segment_ids: jax.Array) -> jax.Array:
    """The decoder's attention probabilities, layer by layer.

    inputs_embeds [B, T, D]; positions, segment_ids [B, T] as in Qwen2.hidden_states
    -> [layers, B, heads, T, T] float32. Under jit, layers whose probabilities go unused cost
    only their forward pass (the last layer's output is never needed).
    """
    c = llm.config
    x = inputs_embeds.astype(c.compute_dtype)
    cos, sin = rotary_tables(positions, c.head_dim, c.rope_theta)
    segment_ids = segment_ids.astype(jnp.int32)
    mask = attention_mask(segment_ids, segment_ids)
    probs = []
    for layer in stacked.unstacked(llm.layers):
        probs.append(attention_probabilities(layer.self_attn, layer.input_layernorm(x), cos, sin, mask))
        x, _ = layer(x, cos, sin, mask)
    return jnp.stack(probs)


def _attention(model: TinyGroundingGPT, input_ids, images, objects) -> jax.Array:
    """Every layer's attention of unpadded sequences with their visual rows in place."""
    embeds = model.embed_inputs(input_ids, images, objects)
    positions = jnp.broadcast_to(jnp.arange(input_ids.shape[1]), input_ids.shape)
    return decoder_attention(model.llm, embeds, positions, jnp.ones_like(input_ids))


@nnx.jit
def every_layer_attention(model: TinyGroundingGPT, input_ids: jax.Array, images: jax.Array | None = None,
                          objects: jax.Array | None = None) -> jax.Array:
    """Attention probabilities of every layer, [layers, B, heads, T, T] float32.

    input_ids [B, T] (full placeholder runs); images / objects uint8 [B, N, S, S, 3].
    """
    return _attention(model, input_ids, images, objects)


@nnx.jit
def last_layer_attention(model: TinyGroundingGPT, input_ids: jax.Array, images: jax.Array | None = None,
                         objects: jax.Array | None = None) -> jax.Array:
    """The last layer's attention probabilities, [B, heads, T, T] float32 (inputs as above)."""
    return _attention(model, input_ids, images, objects)[-1]


def patch_heatmap(probs: np.ndarray, queries: Sequence[int], keys: Sequence[int], grid: int) -> np.ndarray:
    """Attention of the query tokens to the image-run keys as a [grid, grid] map in [0, 1].

    probs [heads, T, T] of one sequence; keys: the `<image>` run's positions, grid² of them in
    row-major patch order (2·grid² with token fusion: the CLIP grid then the DINOv2 grid, which
    cover the same patches and are added). Summed over heads and queries, then min-max scaled.
    """
    queries, keys = np.asarray(queries, int), np.asarray(keys, int)
    if queries.size == 0:
        raise ValueError("no query tokens to take attention from")
    if keys.size == 0 or keys.size % (grid * grid):
        raise ValueError(f"{keys.size} image keys do not cover a {grid}x{grid} patch grid")
    probs = np.asarray(probs, np.float64)
    summed = probs[:, queries][:, :, keys].sum(axis=(0, 1))
    heat = summed.reshape(-1, grid, grid).sum(axis=0)
    low, high = heat.min(), heat.max()
    return ((heat - low) / (high - low) if high > low else np.zeros_like(heat)).astype(np.float32)


def overlay_heatmap(square_image: Image.Image, heatmap: np.ndarray, *, alpha: float = 0.5,
                    colormap: str = "jet") -> Image.Image:
    """The heatmap [grid, grid] in [0, 1], upsampled bilinearly to the (padded, square) image and
    blended over it with a matplotlib colormap: (1 - alpha) · image + alpha · colour."""
    from matplotlib import colormaps
    if square_image.width != square_image.height:
        raise ValueError(f"overlay_heatmap expects the padded square image, got "
                         f"{square_image.width}x{square_image.height} (use expand_to_square)")
    side = square_image.width
    heat = Image.fromarray(np.asarray(heatmap, np.float32)).resize((side, side), Image.BILINEAR)
    colours = colormaps[colormap](np.clip(np.asarray(heat), 0.0, 1.0))[..., :3] * 255.0
    blended = (1.0 - alpha) * np.asarray(square_image.convert("RGB"), np.float32) + alpha * colours
    return Image.fromarray(np.round(blended).astype(np.uint8))


def span_tokens(tokenizer: TggTokenizer, answer_ids: Sequence[int], span: str) -> list[int]:
    """Indices into answer_ids of the tokens that overlap the first occurrence of `span` in the
    decoded answer (e.g. the coordinates inside a longer reply)."""
    text = tokenizer.decode(answer_ids)
    start = text.find(span)
    if not span or start < 0:
        raise ValueError(f"span {span!r} is not in the answer {text!r}")
    end = start + len(span)
    # Character range of token j: between the lengths of the decoded prefixes before and after it.
    bounds = [len(tokenizer.decode(answer_ids[:j])) for j in range(len(answer_ids) + 1)]
    return [j for j in range(len(answer_ids)) if bounds[j] < end and bounds[j + 1] > start]


@dataclasses.dataclass(frozen=True)
class AttentionMap:
    """heatmap [grid, grid] in [0, 1]; image: the padded square image at its original resolution
    (what the heatmap covers); offset: where the original image sits in it (boxes in original
    pixels move by it); query_text: the decoded query tokens (or "<object>"); input_ids [T],
    query_positions and image_positions index it; probs [heads, T, T] the last-layer attention."""
    heatmap: np.ndarray
    image: Image.Image
    offset: tuple[int, int]
    query_text: str
    input_ids: np.ndarray
    query_positions: np.ndarray
    image_positions: np.ndarray
    probs: np.ndarray


def attention_map(model: TinyGroundingGPT, tokenizer: TggTokenizer, image: bytes, question: str,
                  answer: str, *, objects: Sequence[Sequence[float]] = (), query: str = "answer",
                  span: str | None = None, object_index: int = 0,
                  object_margin: float = OBJECT_MARGIN) -> AttentionMap:
    """Last-layer attention of one answered question about one image, as a patch heatmap.

    question: the human turn (one `<object>` per box in `objects`, original pixels); answer: the
    reply to attend from (the model's own answer, or any text). query: "answer" (the answer's
    tokens, or with `span` only those covering that substring: text or coordinates) or "object"
    (the run of `<object>` number `object_index`: the object image).
    """
    if query not in ("answer", "object"):
        raise ValueError(f"query must be 'answer' or 'object', got {query!r}")
    config = model.config
    boxes = np.asarray(objects, np.float32).reshape(-1, 4)
    turns = [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]
    encoded = encode_conversation(turns, tokenizer, num_images=1, num_objects=len(boxes),
                                  image_tokens=config.image_tokens, object_tokens=config.object_tokens,
                                  max_length=config.llm.max_position_embeddings)
    ids = encoded.input_ids
    # The images exactly as for generation (same crops and preprocessing).
    spec = for_model(config, max_objects=len(boxes), object_margin=object_margin)
    pixels = prompt_inputs(turns[:1], image, boxes, tokenizer, spec)
    image_positions = np.flatnonzero(ids == config.image_token_id)
    if query == "answer":
        answer_positions = np.flatnonzero(encoded.loss_mask)[:-1]  # the loss also covers <|im_end|>
        if span is not None:
            answer_positions = answer_positions[span_tokens(tokenizer, ids[answer_positions].tolist(), span)]
        query_positions = answer_positions
        query_text = tokenizer.decode(ids[query_positions].tolist())
    else:
        runs = np.flatnonzero(ids == config.object_token_id).reshape(-1, config.object_tokens)
        if not 0 <= object_index < len(runs):
            raise ValueError(f"object_index {object_index}: the question has {len(runs)} <object>")
        query_positions, query_text = runs[object_index], OBJECT_TOKEN
    probs = last_layer_attention(model, ids[None], pixels["images"][None], pixels["objects"][None])
    probs = np.asarray(probs[0])
    img = load_image(bytes(image), source="attention_map image")
    return AttentionMap(heatmap=patch_heatmap(probs, query_positions, image_positions, config.image_grid),
                        image=expand_to_square(img), offset=pad_offset(*img.size), query_text=query_text,
                        input_ids=ids, query_positions=query_positions,
                        image_positions=image_positions, probs=probs)
