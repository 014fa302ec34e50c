"""The work store: one JSONL line per finished image, per shard.

`workdir/shard-IIIII-of-NNNNN.jsonl`. A line is appended and flushed as each image finishes, so
a killed worker loses only the images in flight; a line cut short by the kill is removed when the
shard is opened again, and the images of the complete lines are skipped.
"""

from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Iterator
from typing import Any

from absl import logging


def shard_path(workdir: str | pathlib.Path, index: int, count: int) -> pathlib.Path:
    return pathlib.Path(workdir) / f"shard-{index:05d}-of-{count:05d}.jsonl"


def shard_files(workdir: str | pathlib.Path) -> list[pathlib.Path]:
    return sorted(pathlib.Path(workdir).glob("shard-*-of-*.jsonl"))


def read_lines(path: pathlib.Path) -> Iterator[dict[str, Any]]:
    """The complete records of a shard file; a torn last line is skipped, and so is (with a
    warning naming the file and line) any line that is not a JSON record."""
    with open(path, "rb") as f:
        for number, data in enumerate(f, 1):
            if not data.endswith(b"\n"):
                break
            try:
                record = json.loads(data)
                record["image"]
            except (ValueError, KeyError, TypeError):
                logging.warning("%s: line %d is not a store record; skipped", path, number)
                continue
            yield record


class Shard:
    """Appends image records to one shard file; `done` holds the images already there."""

    def __init__(self, path: str | pathlib.Path):
        self.path = pathlib.Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.done: set[str] = set()
        self._repair()
        self._file = open(self.path, "a", encoding="utf-8")

    def _repair(self) -> None:
        if not self.path.exists():
            return
        good = 0
        with open(self.path, "rb") as f:
            for data in f:
                if not data.endswith(b"\n"):
                    break  # only the last line can be torn: every write ends with its newline
                good += len(data)
        for record in read_lines(self.path):
            self.done.add(record["image"])
        size = self.path.stat().st_size
        if good < size:
            logging.warning("%s: dropping %d bytes after the last complete line (an interrupted "
                            "write); those images run again", self.path, size - good)
            with open(self.path, "r+b") as f:
                f.truncate(good)

    def append(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._file.flush()
        self.done.add(record["image"])

    def close(self) -> None:
        self._file.close()


def rewrite(path: pathlib.Path, records: list[dict[str, Any]]) -> None:
    """Replaces a shard file's content atomically (a kill leaves the old or the new file)."""
    tmp = path.with_suffix(".jsonl.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
