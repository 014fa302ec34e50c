"""Batched generation against Hugging Face `generate` (text only; the image + object case is in
tests/test_torch_model.py against the PyTorch assembly), and the sampling pieces by hand."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from flax import nnx

from tgg_jax.convert.mapping import import_tensors, load_into
from tgg_jax.convert.qwen2_map import qwen2_table
from tgg_jax.generate import SamplingConfig, generate, left_pad, strip, top_p_filter
from tgg_jax.models import qwen2


def tiny_pair(scan: bool = False):
    cfg = qwen2.tiny(vocab_size=96, num_layers=2, max_position_embeddings=256, scan_layers=scan)
    torch.manual_seed(0)
    hf = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**cfg.to_hf_dict(), initializer_range=0.2,
                                                                attn_implementation="eager")).eval()
    state = {k: v.detach().numpy() for k, v in hf.state_dict().items()}
    model = qwen2.Qwen2(cfg, rngs=nnx.Rngs(0))
    load_into(model, import_tensors(state.__getitem__, qwen2_table(cfg), cfg.num_layers))
    return model, hf


@pytest.mark.parametrize("scan", [False, True], ids=["layers", "scanned"])
def test_greedy_matches_hf_generate_on_a_left_padded_batch(scan):
    model, hf = tiny_pair(scan)
    rng = np.random.default_rng(0)
    prompts = [rng.integers(3, 96, size=n).astype(np.int32) for n in (7, 12, 3)]
    stop = 5
    ours = generate(model, left_pad(prompts, pad_id=0), SamplingConfig(max_new_tokens=12, stop_ids=(stop,), pad_id=0))
    for prompt, row in zip(prompts, strip(ours, (stop,))):
        ref = hf.generate(torch.tensor(prompt[None], dtype=torch.long), max_new_tokens=12, do_sample=False,
                          eos_token_id=stop, pad_token_id=0)[0, len(prompt):].tolist()
        ref = ref[: ref.index(stop)] if stop in ref else ref
        assert row == ref


def test_rows_stop_independently_and_pad_after_stop():
    model, _ = tiny_pair()
    prompts = [np.array([7, 8, 9], np.int32), np.array([10, 11], np.int32)]
    free = generate(model, left_pad(prompts, 0), SamplingConfig(max_new_tokens=6, pad_id=0))
    stop = int(free[0, 1])  # row 0's second token becomes the stop token
    out = generate(model, left_pad(prompts, 0), SamplingConfig(max_new_tokens=6, stop_ids=(stop,), pad_id=0))
    for row in range(2):
        k = list(free[row]).index(stop) if stop in free[row] else 6
        np.testing.assert_array_equal(out[row, :k + 1], free[row, :k + 1])  # same up to its own stop
        assert (out[row, k + 1:] == 0).all()  # padded after it


def test_top_p_keeps_the_smallest_set_reaching_p():
    probs = np.array([[0.5, 0.3, 0.15, 0.05]])
    logits = jnp.log(jnp.asarray(probs))
    kept = np.isfinite(np.asarray(top_p_filter(logits, 0.75)))
    np.testing.assert_array_equal(kept, [[True, True, False, False]])  # 0.5 + 0.3 reaches 0.75
    kept = np.isfinite(np.asarray(top_p_filter(logits, 0.4)))
    np.testing.assert_array_equal(kept, [[True, False, False, False]])  # the top token always stays


def test_sampling_draws_only_from_the_nucleus():
    model, _ = tiny_pair()
    prompts = [np.array([7, 8, 9], np.int32)] * 4
    sampling = SamplingConfig(max_new_tokens=5, temperature=1.0, top_p=1e-6, pad_id=0)
    out = generate(model, left_pad(prompts, 0), sampling, rng=jax.random.PRNGKey(3))
    greedy = generate(model, left_pad(prompts, 0), SamplingConfig(max_new_tokens=5, pad_id=0))
    np.testing.assert_array_equal(out, greedy)  # a nucleus of one token is greedy
    wide = generate(model, left_pad(prompts, 0), SamplingConfig(max_new_tokens=5, temperature=5.0, pad_id=0),
                    rng=jax.random.PRNGKey(3))
    assert len({tuple(r) for r in wide}) > 1  # hot sampling differs across rows
