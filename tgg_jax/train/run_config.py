"""The resolved config of a run: written before step 0, compared with the command on a resume.

WORKDIR/config.json holds every field of the config the run resolved (total_steps filled in),
and each checkpoint holds a copy (its `run_config` item). A command that resumes a workdir with
a checkpoint is compared with config.json before anything is written:

  refused  (UserError, exit 2)  the architecture, tokenizer, mixture and what the saved optimiser
                                state or data stream depend on; one line names each field and
                                both values
  allowed                       everything else; listed in the log, with the fields that change
                                the training from here on (lr, batch, schedule, ...) as a warning
"""

from __future__ import annotations

import json
import os

from absl import logging

from tgg_jax.checkpoint import CONFIG_FILE as MODEL_FILE
from tgg_jax.errors import UserError

CONFIG_FILE = "config.json"

# Field (or prefix ending in ".") -> what it is part of. A resume with another value is refused.
REFUSED = {
    "model.scan_layers": "the checkpoint's layout (layers stacked or one by one)",
    "model.": "the architecture",
    "data.tokenizer": "the tokenizer",
    "data.mixture": "the data mixture",
    "trainable": "the optimiser state's layout",
    "seed": "the data order (the saved iterator positions index its shuffle)",
    "data.packing": "the data stream's layout",
    "data.worker_count": "the saved data iterator (one state per Grain worker)",
}
# model.* fields that are not the architecture: compute precision, recomputation, and fields
# read only by a fresh start (the tiny configs' init_std and mimetic_gain among them).
MODEL_ALLOWED = ("model.dtype", "model.remat_policy", "model.param_init", "model.init_std",
                 "model.mimetic_gain")
# Allowed fields that do not change the computation of a step (cadence, length, I/O, placement).
SAFE = ("total_steps", "epochs", "data.num_examples", "log_every_steps", "eval_every_steps",
        "checkpoint.", "data.eval", "data.eval_examples", "final_eval.", "peak_flops_per_device", "cpu_devices", "mesh.",
        "compilation_cache_dir", "watchdog.", "data.data_dir", "data.prepare", "init_from",
        "init_hook", "tower_align.", *MODEL_ALLOWED)


def resolved(config) -> dict:
    """The config as plain JSON values (tuples become lists), for saving and comparing."""
    return json.loads(json.dumps(config.to_dict()))


def flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _matches(field: str, patterns) -> bool:
    return any(field == p or (p.endswith(".") and field.startswith(p)) for p in patterns)


def refusal_reason(field: str) -> str | None:
    if field in MODEL_ALLOWED:
        return None
    for pattern, reason in REFUSED.items():
        if _matches(field, (pattern,)):
            return reason
    return None


def diff(saved: dict, current: dict) -> dict[str, tuple]:
    """{field: (saved value, current value)} over the flattened configs; a field missing on one
    side (a newer or older tgg-jax) reads as "<absent>"."""
    a, b = flatten(saved), flatten(current)
    return {k: (a.get(k, "<absent>"), b.get(k, "<absent>")) for k in sorted(a.keys() | b.keys())
            if a.get(k, "<absent>") != b.get(k, "<absent>")}


def has_checkpoint(workdir: str) -> bool:
    """Whether WORKDIR/checkpoints holds a finished step (Orbax renames a step directory to its
    bare number only once the save completed)."""
    path = os.path.join(workdir, "checkpoints")
    return os.path.isdir(path) and any(d.isdigit() for d in os.listdir(path))


def check_resume(config, workdir: str) -> list[str]:
    """Compare `config` with WORKDIR/config.json when the workdir holds a checkpoint to resume.

    Raises UserError naming every refused field with both values; returns (and logs) the
    allowed changes. Writes nothing.
    """
    path = os.path.join(workdir, CONFIG_FILE)
    if not has_checkpoint(workdir) or not os.path.isfile(path):
        return []
    with open(path) as f:
        saved = json.load(f)
    changes = diff(saved, resolved(config))
    # A field on one side only is one this tgg-jax added or no longer has: nothing reads its
    # old value (the architecture itself is checked against the checkpoint's tgg_config.json).
    refused = [(k, v, refusal_reason(k)) for k, v in changes.items()
               if refusal_reason(k) and "<absent>" not in v]
    if refused:
        what = "; ".join(f"config.{k} is {new!r}, the run's is {old!r} ({why})"
                         for k, (old, new), why in refused)
        raise UserError(f"{workdir} resumes a run with another config: {what}. Rerun with the "
                        f"run's values (see {path}) or use a new --workdir")
    lines = [f"{k}: {old!r} -> {new!r}" for k, (old, new) in changes.items()]
    if lines:
        safe = [f"{k}: {o!r} -> {n!r}" for k, (o, n) in changes.items() if _matches(k, SAFE)]
        other = [line for line in lines if line not in safe]
        if safe:
            logging.info("resuming with changed config (safe): %s", "; ".join(safe))
        if other:
            logging.warning("resuming with changed config that changes the training from here "
                            "on: %s", "; ".join(other))
    return lines


def check_model_config(model_cfg, checkpoints_dir: str) -> None:
    """The model a resume builds against checkpoints/tgg_config.json (also for workdirs written
    before config.json existed); dtype and recomputation may differ."""
    path = os.path.join(checkpoints_dir, MODEL_FILE)
    if not os.path.isfile(path) or not has_checkpoint(os.path.dirname(checkpoints_dir)):
        return
    with open(path) as f:
        saved = json.load(f)
    ignored = ("dtype", "remat_policy", "initializer_range")
    changes = {k: v for k, v in diff(saved, json.loads(json.dumps(model_cfg.to_dict()))).items()
               if k.rsplit(".", 1)[-1] not in ignored}
    if changes:
        what = "; ".join(f"{k} is {new!r}, the checkpoint's is {old!r}" for k, (old, new) in changes.items())
        raise UserError(f"{checkpoints_dir} holds another model: {what}. Rerun with the run's "
                        f"config or use a new --workdir")


def write(config, workdir: str) -> dict:
    """WORKDIR/config.json (process 0), written whole or not at all; returns the resolved dict."""
    import jax
    values = resolved(config)
    if jax.process_index() == 0:
        path = os.path.join(workdir, CONFIG_FILE)
        with open(path + ".tmp", "w") as f:
            json.dump(values, f, indent=1, sort_keys=True)
        os.replace(path + ".tmp", path)
    return values
