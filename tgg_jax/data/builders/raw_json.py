"""Reading the raw JSON and JSON-lines files of a release: a missing or invalid file is fatal,
one bad line is a counted skip."""

from __future__ import annotations

import json
from typing import Any

from etils import epath

from tgg_jax.data.builders.raw_entries import Entry, Skip


def read_json(path: epath.Path, expect: type | None = None) -> Any:
    """A whole JSON file; a missing or invalid file is fatal, with an error naming it."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not a JSON file: {e}") from e
    if expect is not None and not isinstance(value, expect):
        raise ValueError(f"{path}: expected a JSON {expect.__name__}, got {type(value).__name__}")
    return value


def jsonl_entries(path: epath.Path, tag: Any = None) -> list[Entry]:
    """One Entry ("line N") per non-blank line of a JSON-lines file, its data the raw line, or
    (tag, line); json_line parses it later, so one bad line is a counted skip, not a failed build."""
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    lines = path.read_text(encoding="utf-8").splitlines()
    return [Entry(f"line {n}", str(path), line if tag is None else (tag, line))
            for n, line in enumerate(lines, 1) if line.strip()]


def json_line(line: str, entry: Entry) -> Any:
    """The JSON value of one line of `entry`'s file; Skip("unreadable annotation") if it is not JSON."""
    try:
        return json.loads(line)
    except json.JSONDecodeError as e:
        raise Skip("unreadable annotation", entry.id, entry.source, str(e)) from None
