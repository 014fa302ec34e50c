"""Loading pickles that hold only plain data (RefCOCO's `refs(unc).p` and friends), safely.

A pickle can name any importable callable and have the unpickler call it (`os.system` through
`__reduce__`), so loading an untrusted one runs its author's code. Every such reference goes through
`Unpickler.find_class`; here it refuses all of them, so only what the pickle machine builds by
itself loads: dict, list, tuple, str, int, float, bool, None, and bytes at protocol >= 3 (lower
protocols spell Python 3 bytes through `_codecs.encode`, a global, so those are refused).
Python 2 pickles (the refs files were written by Python 2) decode their byte strings as UTF-8.

The project reads pickles only through this module; bare `pickle.load` is not used anywhere.
"""

from __future__ import annotations

import io
import pickle
from typing import Any

from etils import epath


class PlainDataUnpickler(pickle.Unpickler):
    """An Unpickler that refuses every global (class, function, module attribute)."""

    def __init__(self, file, *, source: str, encoding: str = "utf-8"):
        super().__init__(file, encoding=encoding, errors="strict")
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(
            f"{self._source}: refusing to load {module}.{name}: only plain data "
            "(dict, list, tuple, str, bytes, numbers, bool, None) may appear in this pickle")

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError(f"{self._source}: persistent ids are not allowed ({pid!r})")


def loads(data: bytes, *, source: str = "<bytes>", encoding: str = "utf-8") -> Any:
    """Unpickles plain data from bytes; raises pickle.UnpicklingError naming `source` otherwise."""
    try:
        return PlainDataUnpickler(io.BytesIO(data), source=source, encoding=encoding).load()
    except pickle.UnpicklingError as e:
        if str(e).startswith(f"{source}: "):  # already ours
            raise
        raise pickle.UnpicklingError(f"{source}: not a readable pickle: {e}") from e
    except (EOFError, ValueError, UnicodeDecodeError, IndexError, KeyError, TypeError) as e:
        # Truncated or garbled streams surface as these; report them the same way.
        raise pickle.UnpicklingError(f"{source}: not a readable pickle: "
                                     f"{type(e).__name__}: {e}") from e


def load(path: epath.PathLike, *, encoding: str = "utf-8") -> Any:
    """Unpickles plain data from a file; raises pickle.UnpicklingError naming the file otherwise."""
    path = epath.Path(path)
    return loads(path.read_bytes(), source=str(path), encoding=encoding)
