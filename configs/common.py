"""Fields shared by every training config. A stage file changes only what differs (SPEC §3).

Run:  tgg-train --config configs/stage2.py:3b --workdir DIR [--config.lr=1e-5 ...]
"""

import re

import ml_collections

LLM_AND_PROJECTOR = ("projector\\..*", "llm\\..*")
LLM_ONLY = ("llm\\..*",)
PROJECTOR_ONLY = ("projector\\..*",)

# Per-device batch of SPEC §3 is for 8 GPUs; the configs give the global batch.
GPUS_IN_RECIPE = 8
# Sizes with a preset (tgg_jax.models.tgg.PRESETS); any other Qwen2.5 size trains from init_from.
PRESETS = ("1.5b", "3b", "7b")


def get_base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0

    c.model = ml_collections.ConfigDict()
    c.model.preset = "3b"              # "1.5b", "3b", "7b", "" (init_from's model), or a function
                                       # "package.module:function" (tgg_jax/train/hooks.py)
    c.model.dtype = "bfloat16"         # compute dtype; parameters and optimiser state stay fp32
    c.model.remat_policy = "full"      # none | full | dots | save_attn_mlp_out
    c.model.scan_layers = True         # layers stacked and run with one scan: XLA compiles one
                                       # layer, not all of them (a checkpoint of either layout loads)
    c.model.object_pool = 1            # 2 -> 144 tokens per <object>
    c.model.param_init = ""            # a function changing the fresh model in place (hooks.py)

    c.init_from = ""                   # previous stage's checkpoint (or tgg-convert import-hf output)
    c.init_hook = ""                   # a function run before step 0 of a fresh run that may give
                                       # the parameters to start from (hooks.py; not with init_from)
    c.trainable = LLM_AND_PROJECTOR    # regexes over parameter names; the towers never train

    c.data = ml_collections.ConfigDict()
    c.data.data_dir = "~/tensorflow_datasets"
    c.data.tokenizer = ""              # HF tokenizer dir, a function that makes one (hooks.py), or
                                       # "" (the one beside init_from)
    c.data.prepare = ""                # a function run on process 0 before data is read (hooks.py)
    c.data.mixture = ()                # ((dataset, split, weight), ...)
    c.data.max_length = 2048
    c.data.buckets = (512, 1024, 2048)
    c.data.max_objects = 4             # object slots per example (per packed row: see packing)
    c.data.packing = False             # pack several examples per row (segments) instead of padding
    c.data.examples_per_row = 1.0      # with packing: examples a row holds on average, so that
                                       # epochs still count examples (benchmarks/padding.py)
    c.data.object_margin = 0.1
    c.data.object_jitter = 0.2
    c.data.alpha = "drop"              # transparent pixels: "drop" alpha (SPEC §2) or "white"
    c.data.worker_count = 8            # Grain multiprocess workers per host (0: in process)
    c.data.num_examples = 0            # examples in one epoch of the mixture (for epochs -> steps)
    c.data.eval = ()                   # ((dataset, split), ...) for held-out loss
    c.data.eval_examples = 0           # 0: the whole split

    c.batch_size = 256                 # global
    c.grad_accum_steps = 1
    c.loss_chunk = 512                 # tokens per chunk of the vocabulary projection
    c.loss_normalization = "token"     # mean over target tokens; "sequence": each sequence weighs 1
    c.epochs = 1.0
    c.total_steps = 0                  # 0: from epochs x num_examples / batch_size

    c.lr = 2e-5
    c.warmup_ratio = 0.03
    c.decay_ratio = 1.0                # cosine over all steps after warm-up; < 1: constant, then
                                       # cosine over the last decay_ratio of the steps
    c.weight_decay = 0.0
    c.grad_clip_norm = 1.0
    c.adam_b1 = 0.9
    c.adam_b2 = 0.999
    c.adam_eps = 1e-8

    c.mesh = ml_collections.ConfigDict({"data": 1, "fsdp": -1, "tensor": 1})
    # > 0: the host's CPU runs as this many JAX devices (tgg-train's --cpu_devices wins). Ignored
    # by accelerators; on CPU several devices run the step's many small ops side by side.
    c.cpu_devices = 0

    c.checkpoint = ml_collections.ConfigDict()
    c.checkpoint.every_steps = 1000
    c.checkpoint.keep = 3
    c.checkpoint.async_save = True

    # Progress watchdog: no step for factor x the median step time (and at least min_seconds)
    # prints every thread's stack and exits with code 3 (a hung collective or a dead peer).
    c.watchdog = ml_collections.ConfigDict()
    c.watchdog.factor = 20.0           # 0: off
    c.watchdog.min_seconds = 600.0
    # JAX's persistent compilation cache ("": off; JAX_COMPILATION_CACHE_DIR wins).
    c.compilation_cache_dir = "~/.cache/tgg_jax/jax_cache"

    c.log_every_steps = 10
    c.eval_every_steps = 0             # 0: only at the end
    c.peak_flops_per_device = 0.0      # 0: look up by device kind (MFU is NaN when unknown)

    c.final_eval = ml_collections.ConfigDict()
    c.final_eval.fn = ""               # a function of the finished run (hooks.py)
    return c


def size_arg(arg: str) -> str:
    """A Qwen2.5 size such as "0.5b", "1.5b", "3b", "7b": it names the import and tokenizer paths;
    1.5b / 3b / 7b also name a preset (memory plans; checked against init_from's model)."""
    if not re.fullmatch(r"\d+(\.\d+)?b", arg or ""):
        raise ValueError(f"config argument must be a Qwen2.5 size such as 0.5b, 1.5b, 3b or 7b; "
                         f"got {arg!r}")
    return arg


def stage_config(size: str, *, init_from: str, mixture, num_examples: int, lr: float,
                 batch_per_device: int = 32, epochs: float = 1.0, trainable=LLM_AND_PROJECTOR,
                 examples_per_row: float = 1.0) -> ml_collections.ConfigDict:
    """One training stage of SPEC §3 for a model size; the stage files differ only in these.

    The architecture and the tokenizer come from init_from (tgg-convert import-hf output for
    stage 1a, the previous stage's checkpoints after it); `preset` is set only for the sizes
    that have one, and must then agree with the checkpoint. examples_per_row > 1 packs the
    stage's examples into 2048-token rows: the batch becomes rows holding about as many examples
    as SPEC §3's batch.
    """
    c = get_base_config()
    c.model.preset = size if size_arg(size) in PRESETS else ""
    c.init_from = init_from
    c.trainable = trainable
    c.data.tokenizer = ""              # the one that came with init_from
    c.data.mixture = mixture
    c.data.num_examples = num_examples
    c.lr = lr
    c.batch_size = batch_per_device * GPUS_IN_RECIPE
    if examples_per_row > 1:
        c.data.packing = True
        c.data.examples_per_row = examples_per_row
        # Rows per GPU: a multiple of 4, so that grad_accum_steps 2 or 4 divides the batch.
        rows = max(4, 4 * round(batch_per_device / examples_per_row / 4))
        c.batch_size = rows * GPUS_IN_RECIPE
    c.epochs = epochs
    return c
