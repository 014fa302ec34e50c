"""Raw entries and the skips of the ones that cannot become records.

Bad input never stops a build: an unusable raw entry raises (or yields) `Skip`, which the base
builder counts per split and reason and logs with the file and record id.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from etils import epath

# Errors from parsing one raw entry that mean "this entry is bad", not "the builder is broken".
ENTRY_ERRORS = (KeyError, TypeError, ValueError, IndexError, AttributeError)


class Entry(NamedTuple):
    """One raw entry: its dataset id, the file it comes from (for log lines), and its data."""

    id: str
    source: str
    data: Any


class Skip(Exception):
    """A raw entry (or part of one) that cannot become a record.

    reason: short category used for the counts ("missing image", "malformed conversation", ...).
    record_id: the dataset's id of the entry. source: the file it came from.
    """

    def __init__(self, reason: str, record_id: str, source: str | epath.Path, detail: str = ""):
        self.reason, self.record_id, self.detail = reason, record_id, detail
        self.source = str(source)
        message = f"{source}: record {record_id}: {reason}"
        super().__init__(message + (f" ({detail})" if detail else ""))
