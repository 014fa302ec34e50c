"""The embedded default: a tiny TinyGroundingGPT trained from scratch on the built-in synthetic
grounding data (tgg_shapes) on a CPU, then evaluated on the held-out split. Gets yes/no 0.83,
"which shape" 1.00 and held-out loss 0.872 in 8.4 minutes on 2 cores.

    tgg-train --config configs/tiny.py --workdir runs/tiny

Stage 0 first aligns the from-scratch towers and projector to the LLM's word space (about 4
minutes), then 600 steps train the LLM alone on a yes/no-heavy mixture. The measurements behind
each setting: docs/tiny_model.md.
"""

import ml_collections

from configs import common


def add_tiny_keys(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The tiny model's own keys (read by tgg_jax/tiny/), with the functions of tgg_jax/tiny/ at
    the trainer's extension points (tgg_jax/train/hooks.py)."""
    c.model.preset = "tgg_jax.tiny.model:preset"          # tgg_tiny() sized by the keys below
    c.model.param_init = "tgg_jax.tiny.model:param_init"  # mimetic attention (mimetic_gain)
    c.model.image_pool = 1             # k x k pooled global image (the real presets keep 576 tokens)
    c.model.hidden_size = 128
    c.model.intermediate_size = 384
    c.model.num_layers = 4
    c.model.num_heads = 4
    c.model.num_kv_heads = 2
    c.model.vision_width = 64
    c.model.vision_layers = 2
    c.model.vision_heads = 4
    c.model.patch_size = 14
    c.model.image_size = 336
    c.model.freeze_towers = True       # False trains its from-scratch towers
    c.model.init_std = 0.02            # N(0, std) for the LLM's and projector's weights
    c.model.mimetic_gain = 0.0         # > 0 starts query heads as their key heads

    # Stage 0: > 0 first aligns the from-scratch towers and projector to the LLM's word
    # embeddings for this many steps (tgg_jax/tiny/tower_align.py) and starts from the result.
    c.init_hook = "tgg_jax.tiny.tower_align:ensure_aligned"
    c.tower_align = ml_collections.ConfigDict()
    c.tower_align.steps = 0
    c.tower_align.lr = 2e-3
    c.tower_align.batch_size = 32
    c.tower_align.seed = 0             # its scene stream (the model starts from config.seed)
    c.tower_align.size_word = False    # targets name the size word too ("small", ...)
    c.tower_align.box_code = 0.0       # > 0: image tokens also carry their shape's box (scale)
    c.tower_align.box_weight = 1.0     # the box code's error weighs this many times a word's
    c.tower_align.clip_norm = 0.0      # > 0: gradients clipped to this global norm
    c.tower_align.decay_ratio = 0.0    # > 0: lr held, then a cosine to 0 over this last part

    c.data.tokenizer = "tgg_jax.tiny.tokenizer:make"  # byte-level BPE on tgg_shapes text, 512 entries
    c.data.prepare = "tgg_jax.tiny.data:ensure_built"  # tgg_shapes generated on first use

    # Generate on a held-out split and score it against baselines (tgg_jax/tiny/final_eval.py).
    c.final_eval.fn = "tgg_jax.tiny.final_eval:evaluate_run"
    c.final_eval.enabled = False
    c.final_eval.dataset = "tgg_shapes"
    c.final_eval.split = "test"
    c.final_eval.examples = 0
    c.final_eval.batch_size = 32
    c.final_eval.max_new_tokens = 32
    c.final_eval.images_to_draw = 8
    return c


def get_config(arg: str = ""):
    del arg
    c = add_tiny_keys(common.get_base_config())
    c.model.dtype = "float32"          # CPUs have no fast bf16 matmul
    c.model.remat_policy = "none"
    c.model.scan_layers = False        # two layers: nothing to gain from scanning
    c.model.image_size = 112           # 8 x 8 patches of 14 px
    c.model.image_pool = 2             # 4 x 4 image tokens, each aligned to the shape under it
    c.model.object_pool = 2            # 2 x 2 pooled: 16 tokens per object
    # Two LLM layers, not four: about 2.2 steps/s against 1.25, for ~750 steps to yes/no instead of
    # ~600, so it comes sooner in wall time.
    c.model.num_layers = 2
    # The LLM alone trains: left trainable, the projector drifts off the word embeddings stage 0
    # put it on. Frozen, yes/no leaves chance at steps ~350-420 instead of ~700.
    c.trainable = common.LLM_ONLY
    # N(0, 0.05) instead of HF's 0.02 for the from-scratch LLM and projector: "which shape is
    # <object>" 0.48 against 0.17 after 600 steps (4 layers, no stage 0, lr 2e-3).
    c.model.init_std = 0.05
    # Query heads start as their key heads, so a question word first attends to image tokens like it.
    c.model.mimetic_gain = 1.0
    # Stage 0 (tgg_jax/tiny/tower_align.py): the tiny towers and projector trained to put each
    # image token on the word embeddings of the shape under it, as CLIP's pretraining ties the real
    # towers to language. Without it, or with 1000-1200 steps, yes/no stays at chance (0.50-0.52).
    c.tower_align.steps = 2000

    c.data.data_dir = "~/tensorflow_datasets"
    # Yes/no needs ~14 k records at a held learning rate before it leaves chance (batch 16, 9.6 k
    # records in 600 steps, stays at 0.50), so three quarters of the sequences come from the
    # yesno_only build (up to 4 questions about each image) and the rest from yesno_multi (every
    # task; its held-out splits are tgg_shapes').
    c.data.mixture = (("tgg_shapes/yesno_only", "train", 3.0), ("tgg_shapes/yesno_multi", "train", 1.0))
    c.data.max_length = 176            # every single-turn task fits; longer records keep whole turns
    c.data.buckets = (176,)
    c.data.max_objects = 1
    c.data.worker_count = 0
    c.data.eval = (("tgg_shapes/yesno_multi", "validation"),)
    c.data.eval_examples = 256

    c.batch_size = 32
    c.loss_chunk = 0
    # Each sequence weighs 1, not each token: under the token mean a 2-token "which shape" or
    # yes/no answer gets 1/10 of a 20-token box's pull. "Which shape is <object>" 0.875 / 0.771
    # (seeds 0 / 1) against 0.479 / 0.500 (4 layers, no stage 0, 600 steps).
    c.loss_normalization = "sequence"
    # With the projector frozen, yes/no leaves chance at steps ~350-420 (lr 1e-3) and ~480 (5e-4)
    # and reaches 0.84 by step 600 in both.
    c.total_steps = 600
    # 1e-3 held, cosine over the last 20 %: under a full-length cosine the rate decays before
    # yes/no is learned (0.50 after 600 steps).
    c.lr = 1e-3
    c.decay_ratio = 0.2
    c.warmup_ratio = 0.03
    c.weight_decay = 0.0

    c.mesh.data, c.mesh.fsdp, c.mesh.tensor = -1, 1, 1
    # Two CPU devices, each taking half the batch: on 2 cores the step's many small ops then run
    # side by side (tiny_long's step with 4 x 4 image tokens: 677 against 844 ms on one device). Stage 0
    # runs on the first device (4.0 against 4.2 steps/s with one device in all); split over
    # both it was slower (3.5), its scene-drawing thread already keeping the second core busy.
    c.cpu_devices = 2
    c.checkpoint.every_steps = 200
    c.checkpoint.keep = 2
    c.log_every_steps = 20
    c.eval_every_steps = 200

    c.final_eval.enabled = True
    c.final_eval.dataset = "tgg_shapes/yesno_multi"  # its test split is tgg_shapes' test split
    c.final_eval.examples = 500
    return c
