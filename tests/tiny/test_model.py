"""The tiny model: `tgg_tiny` against the spec's structure, and mimetic attention at step 0."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tgg_jax.models import qwen2, stacked
from tgg_jax.models.attention import attend, attention_mask
from tgg_jax.models.qwen2 import Qwen2
from tgg_jax.models.rope import apply_rotary, rotary_tables
from tgg_jax.tiny.model import mimetic_init


def _first_layer_attention(model: Qwen2, ids: jax.Array) -> np.ndarray:
    """Layer 0's attention weights [N heads, T, T], read out through `attend` itself (one-hot
    values), so the query/key head grouping checked is the one the model computes with."""
    layer, c = stacked.unstacked(model.layers)[0], model.config
    t = ids.shape[1]
    x = layer.input_layernorm(model.embed(ids))
    cos, sin = rotary_tables(jnp.arange(t)[None], c.head_dim, c.rope_theta)
    q = apply_rotary(layer.self_attn.q_proj(x).reshape(1, t, c.num_heads, c.head_dim), cos, sin)
    k = apply_rotary(layer.self_attn.k_proj(x).reshape(1, t, c.num_kv_heads, c.head_dim), cos, sin)
    assert t <= c.head_dim
    eye = jnp.broadcast_to(jnp.eye(t, c.head_dim)[None, :, None, :], (1, t, c.num_kv_heads, c.head_dim))
    weights = attend(q, k, eye, mask=attention_mask(jnp.ones((1, t)), jnp.ones((1, t))))[..., :t]
    return np.asarray(weights[0]).transpose(1, 0, 2)


@pytest.mark.parametrize("scan", [False, True], ids=["layers", "scanned"])
def test_mimetic_init_makes_tokens_attend_to_their_earlier_copies(scan):
    cfg = qwen2.tiny(num_heads=4, num_kv_heads=2, initializer_range=0.05, rope_theta=1e6, scan_layers=scan)
    model = Qwen2(cfg, rngs=nnx.Rngs(0))
    ids = jnp.array([[5, 17, 40, 61, 77, 93, 120, 5]])  # the last token repeats the first
    before = _first_layer_attention(model, ids)[:, -1]
    mimetic_init(model, 4.0)
    attn = stacked.unstacked(model.layers)[0].self_attn
    q = attn.q_proj.kernel[...].reshape(cfg.hidden_size, cfg.num_kv_heads, 2, cfg.head_dim)
    k = attn.k_proj.kernel[...].reshape(cfg.hidden_size, cfg.num_kv_heads, 1, cfg.head_dim)
    np.testing.assert_allclose(q, 4.0 * np.broadcast_to(k, q.shape), rtol=1e-6)
    after = _first_layer_attention(model, ids)[:, -1]   # [heads, T] for the repeated token
    # Every head now puts more weight on the earlier copy than on any other earlier token, which
    # random init does not do.
    assert (after[:, 0] > after[:, 1:-1].max(axis=1)).all(), after
    assert not (before[:, 0] > before[:, 1:-1].max(axis=1)).all(), before


def test_preset_of_the_default_config_is_the_documented_model():
    from types import SimpleNamespace

    from configs import tiny
    from tgg_jax.tiny.model import preset
    cfg = preset(tiny.get_config(), SimpleNamespace(vocab_size=431, image_id=3, object_id=4))
    llm = cfg.llm
    assert llm.vocab_size == 448  # 431 entries rounded up to a multiple of 64 rows
    assert (llm.num_layers, llm.hidden_size, llm.intermediate_size, llm.num_heads,
            llm.num_kv_heads) == (2, 128, 384, 4, 2)
    assert llm.tie_word_embeddings and llm.initializer_range == 0.05
    assert llm.max_position_embeddings == 176
    assert (cfg.clip.hidden_size, cfg.clip.intermediate_size, cfg.clip.num_layers,
            cfg.clip.num_heads, cfg.dinov2.hidden_size, cfg.dinov2.num_layers) == (64, 128, 2, 4, 64, 2)
    # 112 px in 14-px patches: an 8 x 8 grid, pooled 2 x 2 -> 16 tokens per image and object.
    assert (cfg.image_size, cfg.grid, cfg.image_tokens, cfg.object_tokens) == (112, 8, 16, 16)
    assert (cfg.image_token_id, cfg.object_token_id, cfg.freeze_towers) == (3, 4, True)
