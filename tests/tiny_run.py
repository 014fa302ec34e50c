"""The small tiny-model run the trainer, launcher and notebook tests share, as a config and as
the `tgg-train` flags that give the same config (one list, so a change reaches every test)."""

from configs import tiny

# configs/tiny.py shrunk to compile and step in seconds: 16 tokens per image and per object.
SMALL = {
    "model.hidden_size": 32, "model.intermediate_size": 64, "model.num_layers": 2,
    "model.vision_width": 32, "model.vision_layers": 1, "model.vision_heads": 2,
    "model.image_size": 56, "model.object_pool": 1,
    "data.mixture": (("tgg_shapes/tiny", "train", 1.0),), "data.eval": (),
    "data.max_length": 128, "data.buckets": (128,),
    "batch_size": 8, "log_every_steps": 1, "final_eval.enabled": False,
    "tower_align.steps": 0,  # the default's stage 0; tests/tiny/test_tower_align.py covers it
    "compilation_cache_dir": "",  # tests compile in a fresh process state, never from disk
}


def small_config(data_dir: str, **overrides):
    """configs/tiny.py with SMALL, data from `data_dir`, then `overrides` (dotted keys)."""
    c = tiny.get_config()
    c.update_from_flattened_dict({**SMALL, "data.data_dir": data_dir, **overrides})
    return c


def cli_args(data_dir: str, workdir: str, steps: int, **overrides) -> list[str]:
    """`tgg-train` arguments for configs/tiny.py with SMALL, `steps` steps and `overrides`."""
    flags = {**SMALL, "data.data_dir": data_dir, "total_steps": steps, **overrides}
    # Python literals without spaces, so the launcher scripts pass each flag on as one word.
    text = lambda v: v if isinstance(v, str) else repr(v).replace(" ", "")
    return ["--config", "configs/tiny.py", "--workdir", workdir,
            *(f"--config.{k}={text(v)}" for k, v in flags.items())]
