"""Image files read and verified by decoding them fully with PIL, their size as displayed."""

from __future__ import annotations

import contextlib
import io

from etils import epath
from PIL import ExifTags, Image, ImageFile

from tgg_jax.data.builders.raw_entries import Skip


@contextlib.contextmanager
def _strict_truncation():
    """Truncated files must fail to decode even if someone enabled PIL's lenient mode."""
    saved = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = saved


class ImageReader:
    """Reads image files and verifies them by decoding with PIL (Image.open + load).

    The decode result per path is remembered (many records share an image), and the bytes of the
    last file read are kept, as records of one image usually come together.
    """

    def __init__(self):
        self._checked: dict[str, tuple[int, int] | tuple[str, str]] = {}
        self._last: tuple[str, bytes] | None = None

    def read(self, path: epath.PathLike, record_id: str) -> tuple[bytes, int, int]:
        """(file bytes, width, height); raises Skip for a missing, empty or undecodable file."""
        path = epath.Path(path)
        key = str(path)
        if self._last is not None and self._last[0] == key:
            data = self._last[1]
        else:
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                raise Skip("missing image", record_id, path) from None
            except OSError as e:
                raise Skip("unreadable image", record_id, path, str(e)) from None
            self._last = (key, data)
        if not data:
            raise Skip("empty image", record_id, path)
        if key not in self._checked:
            self._checked[key] = _decode_size(data)
        result = self._checked[key]
        if isinstance(result[0], str):
            raise Skip(result[0], record_id, path, result[1])
        return data, result[0], result[1]


# EXIF orientations whose display turns the image a quarter (ImageOps.exif_transpose swaps
# width and height for these).
_QUARTER_TURNS = (5, 6, 7, 8)


def _decode_size(data: bytes) -> tuple[int, int] | tuple[str, str]:
    """(width, height) as displayed (SPEC §2: after EXIF orientation, as preprocess.load_image
    shows it to the model) if the bytes decode fully, else ("corrupt image", why)."""
    try:
        with _strict_truncation(), Image.open(io.BytesIO(data)) as image:
            image.load()
            width, height = image.size
            if image.getexif().get(ExifTags.Base.Orientation) in _QUARTER_TURNS:
                width, height = height, width
            return width, height
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        return "corrupt image", f"{type(e).__name__}: {e}"
