"""tgg-synth: the data engine of the paper's §3.2 (docs/data_engine.md).

    tgg-synth run --config configs/synth/default.py --image_root IMAGES --workdir OUT
                  [--shard_index I --num_shards N] [--refilter] [--config.x=y ...]
    tgg-synth merge --config configs/synth/default.py --workdir OUT [--out DIR]
    tgg-synth annotations --source coco|visual_genome|flickr30k_entities --raw_dir DIR \
                          --out IMAGES/annotations.json   # boxes the source has (no detector)
    tgg-synth shapes_images --out IMAGES --count 200        # tgg_shapes scenes + annotations.json
    tgg-synth serve_shapes --image_root IMAGES [--port 8765] [--latency_s 0]

`run` appends one JSONL line per image to OUT/shard-I-of-N.jsonl and writes
OUT/summary-I-of-N.json; rerunning skips the images already there. `--refilter` re-judges the
stored records with the config's filter thresholds and makes no model call. `merge` writes
image_box.json, text_image.json, grounding_conversations.json and grounding_descriptions.json
(LLaVA format; "image" relative to IMAGES) for `tgg-data build llava_conversations`.
Exit status 2 for a usage or input error.
"""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from tgg_jax.errors import flag_error_message
from tgg_jax.synth import annotations as annotations_lib
from tgg_jax.synth import client as client_lib, detectors, merge as merge_lib, pipeline
from tgg_jax.synth import prompts as prompts_lib, shapes_server, store

COMMANDS = ("run", "merge", "annotations", "shapes_images", "serve_shapes")
REPO = pathlib.Path(__file__).resolve().parents[2]

# tgg-synth's own flag set: the other CLIs (tgg-train, tgg-eval) also define --config and
# --workdir, and a process (a test run, a notebook) may import several of them.
FLAGS = flags.FlagValues()
# No default in the flag: ml_collections would parse --config.* overrides from sys.argv at import,
# where a typo is a traceback; run() supplies DEFAULT_CONFIG when --config is absent.
DEFAULT_CONFIG = str(REPO / "configs/synth/default.py")
_CONFIG = config_flags.DEFINE_config_file("config", None, "Synth config (default: "
                                          "configs/synth/default.py; :shapes for the shapes "
                                          "backend).", flag_values=FLAGS)
_WORKDIR = flags.DEFINE_string("workdir", None, "Store (shard JSONL files, summaries) and, by "
                               "default, the merged JSON files.", flag_values=FLAGS)
_IMAGE_ROOT = flags.DEFINE_string("image_root", None, "Image folder (overrides config.image_root).",
                                  flag_values=FLAGS)
_SHARD_INDEX = flags.DEFINE_integer("shard_index", None, "This worker's shard (default: config, "
                                    "then SLURM_ARRAY_TASK_ID / SLURM_PROCID, then 0).", flag_values=FLAGS)
_NUM_SHARDS = flags.DEFINE_integer("num_shards", None, "Number of shards (default: config, then "
                                   "SLURM_ARRAY_TASK_COUNT / SLURM_NTASKS, then 1).", flag_values=FLAGS)
_REFILTER = flags.DEFINE_bool("refilter", False, "run: re-apply the filters to the stored work of "
                              "this worker's shard files, without model calls.", flag_values=FLAGS)
_OUT = flags.DEFINE_string("out", None, "merge: output folder (default --workdir); "
                           "shapes_images: the image folder to write; annotations: the JSON "
                           "file.", flag_values=FLAGS)
_SOURCE = flags.DEFINE_enum("source", None, list(annotations_lib.SOURCES),
                            "annotations: the dataset whose boxes to convert.", flag_values=FLAGS)
_RAW_DIR = flags.DEFINE_string("raw_dir", None, "annotations: its release folder (COCO: the "
                               "instances_*.json file).", flag_values=FLAGS)
_COUNT = flags.DEFINE_integer("count", 100, "shapes_images: number of scenes.", flag_values=FLAGS)
_SEED = flags.DEFINE_integer("seed", 0, "shapes_images: tgg_shapes seed.", flag_values=FLAGS)
_PORT = flags.DEFINE_integer("port", 8765, "serve_shapes: port on 127.0.0.1.", flag_values=FLAGS)
_LATENCY = flags.DEFINE_float("latency_s", 0.0, "serve_shapes: seconds added to every answer.",
                              flag_values=FLAGS)


class UsageError(Exception):
    """A user error: one line on stderr, exit status 2."""


def prompt_dir(config) -> pathlib.Path:
    """config.prompts.dir, relative to the working directory or else to the repository."""
    path = pathlib.Path(config.prompts.dir).expanduser()
    return path if path.is_absolute() or path.exists() else REPO / path


def shard_spec(config, index: int | None = None, count: int | None = None,
               env=os.environ) -> tuple[int, int]:
    """(index, count) from the flags, the config, SLURM's array or task environment, or 0 of 1."""
    if index is None and config.shard_index >= 0:
        index = config.shard_index
    if count is None and config.num_shards > 0:
        count = config.num_shards
    if "SLURM_ARRAY_TASK_ID" in env:
        if index is None:
            index = int(env["SLURM_ARRAY_TASK_ID"]) - int(env.get("SLURM_ARRAY_TASK_MIN", 0))
        count = count or int(env.get("SLURM_ARRAY_TASK_COUNT", 1))
    elif "SLURM_PROCID" in env:
        index = int(env["SLURM_PROCID"]) if index is None else index
        count = count or int(env.get("SLURM_NTASKS", 1))
    index, count = index or 0, count or 1
    if not 0 <= index < count:
        raise UsageError(f"shard index {index} is not in [0, {count})")
    return index, count


def image_root(config) -> pathlib.Path:
    root = _IMAGE_ROOT.value or config.image_root
    if not root:
        raise UsageError("no image folder: pass --image_root (or set config.image_root)")
    path = pathlib.Path(root).expanduser()
    if not path.is_dir():
        raise UsageError(f"--image_root {path} is not a directory")
    return path


def workdir() -> pathlib.Path:
    if not _WORKDIR.value:
        raise UsageError("--workdir is required")
    return pathlib.Path(_WORKDIR.value).expanduser()


def command_run(config) -> int:
    index, count = shard_spec(config, _SHARD_INDEX.value, _NUM_SHARDS.value)
    if _REFILTER.value:
        counts = refilter_shards(config, workdir(), index, count)
        print(f"refiltered: {json.dumps(counts)}")
        return 0
    code, summary = synthesize(config, image_root(config), workdir(), index, count)
    if summary is not None:
        print(json.dumps(summary, indent=1, sort_keys=True))
    return code


def refilter_shards(config, out: pathlib.Path, index: int = 0, count: int = 1) -> dict[str, int]:
    """Re-judges the stored records of this worker's shard files (file k goes to worker
    k mod count) with the config's thresholds; no client or detector is built."""
    files = [f for k, f in enumerate(store.shard_files(out)) if k % count == index]
    if not files:
        raise UsageError(f"{out}: no shard files to refilter")
    return merge_lib.refilter(files, pipeline.thresholds(config))


def synthesize(config, root: pathlib.Path, out: pathlib.Path, index: int = 0,
               count: int = 1) -> tuple[int, dict | None]:
    """Runs shard `index` of `count` over the images under root into out; (exit status, summary)."""
    images = pipeline.list_images(root, config.image_list)
    if not images:
        raise UsageError(f"{root}: no image files")
    mine = pipeline.shard_of(images, index, count)
    prompts = prompts_lib.load(prompt_dir(config), config.prompts.version)
    detector = detectors.build(config.detector, root)
    return asyncio.run(_run(config, root, mine, pathlib.Path(out), index, count, prompts, detector))


async def _run(config, root, images, out, index, count, prompts, detector):
    client = client_lib.ChatClient(config.mllm, seed=index)
    runner = pipeline.Runner(config, prompts, client.chat, detector, root)
    shard = store.Shard(store.shard_path(out, index, count))
    label = f"shard {index}/{count}"
    logging.info("%s: %d images, %d already done", label, len(images),
                 sum(rel in shard.done for rel in images))
    try:
        summary = await pipeline.run_shard(runner, images, shard, client, label)
    except client_lib.FatalError as e:
        print(f"tgg-synth: {e}", file=sys.stderr)
        return 2, None
    finally:
        shard.close()
        runner.close()
        client.close()
    pipeline.write_summary(out / f"summary-{index:05d}-of-{count:05d}.json", summary)
    return 0, summary


def command_merge(config) -> int:
    root = _IMAGE_ROOT.value or config.image_root
    expected = pipeline.list_images(root, config.image_list) if root else None
    summary = merge_lib.merge(workdir(), _OUT.value or workdir(), tuple(config.families), expected)
    print(json.dumps(summary, indent=1, sort_keys=True))
    return 0


def command_annotations(config) -> int:
    """The annotations detector's table from a dataset's own boxes."""
    del config
    if not (_SOURCE.value and _RAW_DIR.value and _OUT.value):
        raise UsageError("annotations needs --source, --raw_dir and --out (the JSON file to "
                         "write, e.g. IMAGES/annotations.json)")
    table = annotations_lib.convert(_SOURCE.value, _RAW_DIR.value)
    if not table:
        raise UsageError(f"no boxes found in {_RAW_DIR.value} as {_SOURCE.value}")
    annotations_lib.write(table, _OUT.value)
    boxes = sum(len(v) for v in table.values())
    print(f"{boxes} boxes of {len(table)} images -> {_OUT.value}")
    return 0


def command_shapes_images(config) -> int:
    if not _OUT.value:
        raise UsageError("shapes_images needs --out (the image folder to write)")
    names = shapes_server.write_images(_OUT.value, _COUNT.value, _SEED.value)
    print(f"{len(names)} tgg_shapes images and annotations.json -> {_OUT.value}")
    return 0


def command_serve_shapes(config) -> int:
    server = shapes_server.serve(image_root(config), prompt_dir(config), config.prompts.version,
                                 _LATENCY.value, _PORT.value)
    print(f"serving tgg_shapes answers at {server.base_url} (Ctrl-C stops)", flush=True)
    try:
        server._thread.join()
    except KeyboardInterrupt:
        server.close()
    return 0


def main(argv) -> None:
    if len(argv) != 2 or argv[1] not in COMMANDS:
        print(f"tgg-synth: expected one command of {', '.join(COMMANDS)}; got {argv[1:]}",
              file=sys.stderr)
        sys.exit(2)
    config = _CONFIG.value
    try:
        code = globals()[f"command_{argv[1]}"](config)
    except (UsageError, FileNotFoundError, ValueError) as e:
        print(f"tgg-synth: {e}", file=sys.stderr)
        code = 2
    sys.exit(code)


def run(argv=None) -> None:
    """Entry point of the `tgg-synth` console script."""
    def parse(args):
        if not flags.FLAGS.is_parsed():  # absl's own flags (logging) keep their defaults
            flags.FLAGS(args[:1])
        if any(a in ("--help", "-h", "--helpfull", "--helpshort") for a in args[1:]):
            print(__doc__ + "\n" + FLAGS.module_help(sys.modules[__name__]))
            sys.exit(0)
        if not any(a == "--config" or a.startswith("--config=") for a in args):
            args = [args[0], f"--config={DEFAULT_CONFIG}", *args[1:]]
        try:
            return FLAGS(args)
        except (flags.Error, AttributeError, KeyError, ValueError, OSError) as e:
            print(f"tgg-synth: {flag_error_message(e, args)}", file=sys.stderr)
            sys.exit(2)

    app.run(main, argv=argv if argv is not None else sys.argv, flags_parser=parse)


if __name__ == "__main__":
    run()
