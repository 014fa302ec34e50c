"""Shards -> the LLaVA-format JSON files of the four families, and `refilter`.

merge reads every shard file of a workdir, takes each image once (a second line for an image, as
left by rerunning with another shard count, is counted and ignored), and writes, sorted by
record id, `image_box.json`, `text_image.json`, `grounding_conversations.json` and
`grounding_descriptions.json` with the records the filters kept:

    {"id", "image" (relative to image_root), "conversations": [{"from", "value"}],
     "objects": [[x1, y1, x2, y2] original pixels, one per <object>], "family", "model",
     "prompt_version", "detector"}
"""

from __future__ import annotations

import collections
import json
import os
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

from absl import logging

from tgg_jax.synth import families, filters, pipeline, store


def merge(workdir: str | pathlib.Path, out_dir: str | pathlib.Path,
          wanted: Sequence[str] = families.FAMILIES,
          expected: Sequence[str] | None = None) -> dict[str, Any]:
    """Writes the family files into out_dir; returns counts (and images missing from the store
    when `expected`, the full image list, is given)."""
    files = store.shard_files(workdir)
    if not files:
        raise FileNotFoundError(f"{workdir}: no shard-*.jsonl files (run `tgg-synth run` first)")
    seen: set[str] = set()
    duplicates = 0
    outputs: dict[str, list[dict[str, Any]]] = {f: [] for f in wanted}
    status: collections.Counter = collections.Counter()
    for path in files:
        for record in store.read_lines(path):
            if record["image"] in seen:
                duplicates += 1
                logging.warning("%s: image %s is already in another shard; ignored", path,
                                record["image"])
                continue
            seen.add(record["image"])
            status[record["status"]] += 1
            for out in record.get("records", []):
                if out["family"] in outputs and out["verdict"] == filters.KEEP:
                    outputs[out["family"]].append({
                        "id": out["id"], "image": record["image"],
                        "conversations": out["conversations"], "objects": out["objects"],
                        "family": out["family"], "model": record["model"],
                        "prompt_version": record["prompt_version"],
                        "detector": record["detector"]})
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for family, items in outputs.items():
        items.sort(key=lambda r: r["id"])
        path = out_dir / f"{family}.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(items, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    summary = {"images": len(seen), "status": dict(status), "duplicates_ignored": duplicates,
               "records": {f: len(items) for f, items in outputs.items()}}
    if expected is not None:
        missing = sorted(set(expected) - seen)
        summary["missing_images"] = len(missing)
        if missing:
            logging.warning("%d images are not in the store yet (first: %s); rerun `tgg-synth "
                            "run` for their shards", len(missing), missing[0])
    return summary


def refilter(files: Sequence[pathlib.Path], limits: Mapping[str, float]) -> dict[str, int]:
    """Re-judges every stored record with new thresholds; no model or detector runs.
    Returns the kept / dropped counts."""
    counts: collections.Counter = collections.Counter()
    for path in files:
        records = list(store.read_lines(path))
        for record in records:
            if record["status"] == "ok":
                pipeline.judge(record, limits)
                counts.update("kept" if r["verdict"] == filters.KEEP else "dropped"
                              for r in record["records"])
        store.rewrite(path, records)
    return dict(counts)
