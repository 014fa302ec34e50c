"""WORKDIR/history.jsonl: one metrics row per logged step (and per evaluation), appended as it
happens. A resume recomputes the steps after its checkpoint, so it first drops their rows: the
file then holds each step once, whatever the number of restarts."""

from __future__ import annotations

import json
import os

import jax

FILE = "history.jsonl"


def append(workdir: str, row: dict) -> None:
    if jax.process_index() != 0:
        return
    with open(os.path.join(workdir, FILE), "a") as f:
        f.write(json.dumps(row) + "\n")


def truncate(workdir: str, step: int) -> int:
    """Keep the rows of steps <= `step` (and any unreadable tail line is dropped); returns the
    number of rows removed. Rewritten whole (tmp + rename), so a kill leaves one file or the other."""
    path = os.path.join(workdir, FILE)
    if jax.process_index() != 0 or not os.path.isfile(path):
        return 0
    kept, dropped = [], 0
    with open(path) as f:
        for line in f:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by a kill
                dropped += 1
                continue
            if int(row.get("step", 0)) <= step:
                kept.append(line if line.endswith("\n") else line + "\n")
            else:
                dropped += 1
    if dropped:
        with open(path + ".tmp", "w") as f:
            f.writelines(kept)
        os.replace(path + ".tmp", path)
    return dropped
