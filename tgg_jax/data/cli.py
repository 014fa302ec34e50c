"""tgg-data: list and build the TFDS datasets of tgg-jax.

    tgg-data list
    tgg-data build NAME --data_dir DIR [--raw_dir DIR] [--config CFG] [--image_root DIR]
                        [--set FIELD=VALUE ...] [--overwrite]

`build` shows a progress bar per split, then prints per split the records written and the raw
entries skipped, by reason (the log has one line per skipped entry with its file and id).
`--set` replaces a field of the config and needs a new config name, which is also the output
directory: `--set name=my_set --set json_file=my.json`.
"""

from __future__ import annotations

import argparse
import dataclasses
import pickle
import sys
from collections.abc import Sequence
from typing import Any

import tensorflow_datasets as tfds

from tgg_jax.data import builders


def _parse_overrides(pairs: Sequence[str], config_cls: type) -> dict[str, Any]:
    """['json_file=x.json', 'train_size=100'] -> typed values, by the config field's default."""
    defaults = {f.name: f for f in dataclasses.fields(config_cls)}
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or key not in defaults:
            raise SystemExit(f"--set {pair!r}: expected FIELD=VALUE with FIELD one of "
                             f"{', '.join(sorted(defaults))}")
        default = defaults[key].default
        if isinstance(default, bool):
            out[key] = value.lower() in ("1", "true", "yes")
        elif isinstance(default, (int, float)):
            out[key] = type(default)(value)
        elif isinstance(default, tuple):
            out[key] = tuple(v for v in value.split(",") if v)
        else:
            out[key] = value
    return out


def list_datasets() -> str:
    """One block per dataset: name, description, configs."""
    lines = []
    for name, cls in builders.BUILDERS.items():
        raw = "raw files needed" if cls.NEEDS_RAW else "generated, no raw files"
        lines.append(f"{name}  ({raw})\n  {(cls.__doc__ or '').strip().splitlines()[0]}")
        for config in cls.BUILDER_CONFIGS:
            lines.append(f"    --config {config.name}: {config.description or ''}")
    return "\n".join(lines)


def build_summary(builder: builders.RawDataBuilder) -> str:
    """Written and skipped counts per split of a finished build."""
    lines = []
    for split, info in builder.info.splits.items():
        skipped = builder.skipped.get(split, {})
        reasons = ", ".join(f"{reason}: {n}" for reason, n in sorted(skipped.items()))
        line = f"  {split}: {info.num_examples} written, {sum(skipped.values())} skipped"
        lines.append(line + (f" ({reasons})" if reasons else ""))
    return "\n".join(lines)


def build(args: argparse.Namespace) -> int:
    cls = builders.BUILDERS.get(args.name)
    if cls is None:
        print(f"unknown dataset {args.name!r}; known: {', '.join(builders.BUILDERS)}",
              file=sys.stderr)
        return 2
    if cls.NEEDS_RAW and not args.raw_dir:
        print(f"{args.name} needs --raw_dir", file=sys.stderr)
        return 2
    config_cls = type(cls.BUILDER_CONFIGS[0])
    try:
        builder = builders.make_builder(
            args.name, data_dir=args.data_dir, raw_dir=args.raw_dir, config=args.config,
            overrides=_parse_overrides(args.set, config_cls), show_progress=True,
            image_root=args.image_root)
    except (KeyError, ValueError) as e:
        print(f"tgg-data: {e.args[0] if e.args else e}", file=sys.stderr)
        return 2
    mode = (tfds.download.GenerateMode.FORCE_REDOWNLOAD if args.overwrite
            else tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS)
    already = builder.is_prepared() and not args.overwrite
    tfds.disable_progress_bar()  # ours, with totals, replaces TFDS's
    try:
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
            download_mode=mode, try_download_gcs=False))
    except (FileNotFoundError, ValueError, pickle.UnpicklingError) as e:
        # Whole-dataset problems (missing or unreadable raw files, a split with no usable
        # record); single bad records never get here.
        print(f"tgg-data: building {args.name} failed: {e}", file=sys.stderr)
        return 1
    print(f"{builder.name}/{builder.builder_config.name} -> {builder.data_dir}"
          + (" (already built; --overwrite to rebuild)" if already else ""))
    print(build_summary(builder))
    return 0


def run(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `tgg-data` console script."""
    parser = argparse.ArgumentParser(prog="tgg-data", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="datasets and their configs")
    b = commands.add_parser("build", help="build a dataset into ArrayRecord files")
    b.add_argument("name", help="dataset name (see `tgg-data list`)")
    b.add_argument("--data_dir", required=True, help="TFDS data directory to write")
    b.add_argument("--raw_dir", help="directory with the raw files")
    b.add_argument("--config", help="builder config (default: the first)")
    b.add_argument("--image_root", help="folder of the images when they are not under raw_dir "
                                        "(llava_conversations); the dataset keeps its name")
    b.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="replace a config field; repeatable")
    b.add_argument("--overwrite", action="store_true", help="rebuild even if already built")
    args = parser.parse_args(argv)
    if args.command == "list":
        print(list_datasets())
        return 0
    return build(args)


if __name__ == "__main__":
    sys.exit(run())
