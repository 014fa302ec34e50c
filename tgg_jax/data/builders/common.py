"""What every tgg-jax TFDS builder shares: the record features (SPEC §2), image verification,
conversation and box checks, and bad-input handling.

Record, one per conversation::

    id             str      the dataset's own id (not necessarily unique; the TFDS key is)
    image          bytes    the image file as found (PNG/JPEG/...); b"" for text-only records
    width, height  int32    size of the image as displayed (EXIF orientation applied; 0 for
                            text-only), to map boxes back
    objects        [N, 4]   float32 boxes [x1, y1, x2, y2] in displayed pixels, one per <object>
                            in the human turns, in order of appearance
    conversations  [{from: "human" | "gpt", value: str}], starting with human, alternating
    source         str      dataset name
    ...                     builder extras (task, gt_box, label, ...)

Text never contains `<image>`: the chat template puts it in front of the first user turn
(LLaVA moves it there too), so the raw files' `<image>` markers are stripped here; an entry
with more markers than images is skipped ("placeholder mismatch", SPEC §1).
Read back through `tfds.data_source`, strings come as bytes and `conversations` as
`{"from": [bytes, ...], "value": [bytes, ...]}`; `decode_record` turns that into str / lists.

Bad input never stops a build: an unusable raw entry raises (or yields) `Skip`, which the base
builder counts per split and reason and logs with the file and record id.
"""

from __future__ import annotations

import abc
import collections
import contextlib
import dataclasses
import inspect
import io
import json
import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, ClassVar, NamedTuple

import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from etils import epath
from PIL import ExifTags, Image, ImageFile

from tgg_jax.data import coords
from tgg_jax.errors import UserError

IMAGE_TOKEN = "<image>"
OBJECT_TOKEN = "<object>"
ROLES = ("human", "gpt")
# Role spellings seen in LLaVA-format files, mapped to the two the record format uses.
_ROLE_ALIASES = {"human": "human", "user": "human", "gpt": "gpt", "assistant": "gpt"}

# Prompts of SPEC §2.
REC_PROMPT = "Output the coordinate of {expression}."
REGION_CAPTION_PROMPT = "Describe the region {box}."
SHORT_ANSWER_SUFFIX = "\nAnswer the question using a single word or phrase."

# Written beside a build's dataset_info.json: where its raw files came from.
BUILD_FILE = "tgg_build.json"

# Errors from parsing one raw entry that mean "this entry is bad", not "the builder is broken".
ENTRY_ERRORS = (KeyError, TypeError, ValueError, IndexError, AttributeError)


def record_features(**extra: tfds.features.FeatureConnector) -> tfds.features.FeaturesDict:
    """The SPEC §2 record features plus a builder's extras."""
    return tfds.features.FeaturesDict({
        "id": tfds.features.Text(),
        # Raw encoded bytes: tfds.features.Image would need TensorFlow to encode.
        "image": tfds.features.Tensor(shape=(), dtype=np.object_),
        "width": tfds.features.Scalar(dtype=np.int32),
        "height": tfds.features.Scalar(dtype=np.int32),
        "objects": tfds.features.Tensor(shape=(None, 4), dtype=np.float32),
        "conversations": tfds.features.Sequence({
            "from": tfds.features.Text(),
            "value": tfds.features.Text(),
        }),
        "source": tfds.features.Text(),
        **extra,
    })


def box_feature() -> tfds.features.Tensor:
    """A [x1, y1, x2, y2] float32 box in original pixels."""
    return tfds.features.Tensor(shape=(4,), dtype=np.float32)


def decode_record(record: Mapping[str, Any]) -> dict[str, Any]:
    """A record as read back (bytes strings, columnar conversations) -> str and a list of turns."""

    def text(v):
        return v.decode("utf-8") if isinstance(v, bytes) else v

    out = {k: (v if k == "image" else text(v)) for k, v in record.items()}
    turns = record["conversations"]
    out["conversations"] = [{"from": text(f), "value": text(v)}
                            for f, v in zip(turns["from"], turns["value"])]
    return out


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


def clean_text(value: Any, record_id: str, source: str | epath.Path, what: str) -> str:
    """A str that TFDS can store (valid UTF-8), stripped; raises Skip otherwise."""
    if not isinstance(value, str):
        raise Skip("malformed conversation", record_id, source, f"{what} is not a string")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise Skip("malformed conversation", record_id, source,
                   f"{what} is not valid UTF-8") from None
    return value.strip()


def check_conversation(turns: Any, record_id: str, source: str | epath.Path, *,
                       has_image: bool, num_objects: int) -> list[dict[str, str]]:
    """Validates LLaVA-style turns and returns them in record form; raises Skip if malformed.

    Rules: a non-empty list of {from, value}; roles human/gpt (user/assistant accepted),
    alternating from human to gpt; `<image>` only when the record has an image, and removed;
    `<object>` only in human turns, as many as the record's boxes; no empty answers.
    """

    def bad(detail):
        return Skip("malformed conversation", record_id, source, detail)

    if not isinstance(turns, list) or not turns:
        raise bad("conversations is not a non-empty list")
    if len(turns) % 2:
        raise bad(f"{len(turns)} turns: expected human/gpt pairs")
    out, object_count, image_count = [], 0, 0
    for i, turn in enumerate(turns):
        if not isinstance(turn, Mapping) or "from" not in turn or "value" not in turn:
            raise bad(f"turn {i} is not a {{from, value}} object")
        role = _ROLE_ALIASES.get(turn["from"]) if isinstance(turn["from"], str) else None
        if role != ROLES[i % 2]:
            raise bad(f"turn {i} is from {turn['from']!r}, expected {ROLES[i % 2]!r}")
        value = clean_text(turn["value"], record_id, source, f"turn {i}")
        if IMAGE_TOKEN in value:
            if not has_image:
                raise bad(f"turn {i} has {IMAGE_TOKEN} but the record has no image")
            image_count += value.count(IMAGE_TOKEN)
            value = value.replace(IMAGE_TOKEN, "").strip()
        if OBJECT_TOKEN in value and role == "gpt":
            raise bad(f"turn {i}: {OBJECT_TOKEN} in an answer")
        object_count += value.count(OBJECT_TOKEN)
        if role == "gpt" and not value:
            raise bad(f"turn {i}: empty answer")
        out.append({"from": role, "value": value})
    if image_count > 1:  # one image per record; stripping the extras would shift the text
        raise Skip("placeholder mismatch", record_id, source,
                   f"{image_count} {IMAGE_TOKEN} in the text but 1 image")
    if object_count != num_objects:
        raise bad(f"{object_count} {OBJECT_TOKEN} in the text but {num_objects} boxes")
    return out


def check_box(box: Any, width: int, height: int, record_id: str,
              source: str | epath.Path) -> tuple[float, float, float, float]:
    """A [x1, y1, x2, y2] pixel box clipped to the image; raises Skip when it is not a box or
    nothing of it is left inside the image."""
    try:
        x1, y1, x2, y2 = (float(v) for v in box)
    except (TypeError, ValueError):
        raise Skip("bad box", record_id, source, f"{box!r} is not 4 numbers") from None
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
        raise Skip("bad box", record_id, source, f"{box!r} is not finite")
    x1, x2 = min(max(x1, 0.0), width), min(max(x2, 0.0), width)
    y1, y2 = min(max(y1, 0.0), height), min(max(y2, 0.0), height)
    if x2 <= x1 or y2 <= y1:
        raise Skip("bad box", record_id, source, f"{box!r} is empty inside {width}x{height}")
    return x1, y1, x2, y2


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


def xywh_to_xyxy(box: Sequence[float]) -> list[float]:
    """COCO / Visual Genome [x, y, w, h] -> [x1, y1, x2, y2]."""
    x, y, w, h = (float(v) for v in box)
    return [x, y, x + w, y + h]


def box_text(box: Sequence[float], width: int, height: int) -> str:
    """Pixel box -> '[x1, y1, x2, y2]' on the padded square (SPEC §2)."""
    return coords.format_box(coords.pixel_to_square(box, width, height))


def clean_expression(text: str) -> str:
    """A referring expression or phrase for a prompt: single spaces, no trailing full stop."""
    return re.sub(r"\s+", " ", text).strip().rstrip(".").strip()


def make_record(*, record_id: str, source: str, conversations: list[dict[str, str]],
                image: bytes = b"", width: int = 0, height: int = 0,
                objects: Sequence[Sequence[float]] = (), **extra: Any) -> dict[str, Any]:
    """A record dict in the feature layout of `record_features`."""
    return {
        "id": record_id,
        "image": image,
        "width": width,
        "height": height,
        "objects": np.asarray(objects, np.float32).reshape(-1, 4),
        "conversations": conversations,
        "source": source,
        **extra,
    }


class RawDataBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Base of the tgg-jax builders: ArrayRecord output, a `raw_dir`, skip counting.

    Subclasses give `_raw_splits` (split -> raw entries) and `_entry_records` (one entry -> its
    records, raising or yielding `Skip` for what is unusable). After `download_and_prepare`,
    `skipped[split]` counts skipped entries by reason; written counts are in `info.splits`.
    The raw directory comes from `raw_dir=` or, failing that, TFDS's manual_dir.
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = "Pass raw_dir= (tgg-data build --raw_dir) with the raw files."
    NEEDS_RAW: ClassVar[bool] = True
    HOMEPAGE: ClassVar[str] = ""

    # Whether the images live in one folder that `image_root` may name instead (an input path:
    # the dataset keeps its name, SPEC §2 "Raw layouts").
    TAKES_IMAGE_ROOT: ClassVar[bool] = True

    def __init__(self, *, raw_dir: epath.PathLike | None = None, show_progress: bool = False,
                 image_root: epath.PathLike | None = None, file_format: str = "array_record",
                 **kwargs: Any):
        super().__init__(file_format=file_format, **kwargs)
        # TFDS re-creates builders from _original_state when pickling them.
        self._original_state.update(raw_dir=raw_dir, show_progress=show_progress,
                                    image_root=image_root)
        self.raw_dir = epath.Path(raw_dir) if raw_dir else None
        self.image_root = epath.Path(image_root) if image_root else None
        self.show_progress = show_progress
        self.skipped: dict[str, collections.Counter[str]] = {}
        self.images = ImageReader()

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        # TFDS's lookup for classes inside a package imports importlib_resources (not installed).
        return epath.Path(inspect.getfile(cls))

    def _info(self) -> tfds.core.DatasetInfo:
        # DatasetInfo directly: dataset_info_from_configs wants README/CITATIONS files beside us.
        return tfds.core.DatasetInfo(
            builder=self,
            description=(type(self).__doc__ or "").strip(),
            features=record_features(**self._extra_features()),
            homepage=self.HOMEPAGE or None,
        )

    def image_folder(self, raw_dir: epath.Path, *relative: str) -> epath.Path:
        """The images' folder: `image_root` if given, else the first of raw_dir/relative that
        exists (release layouts differ), else raw_dir/relative[0] (missing images are skips)."""
        if self.image_root is not None:
            return self.image_root
        candidates = [raw_dir / r for r in relative]
        return next((c for c in candidates if c.is_dir()), candidates[0])

    def _extra_features(self) -> dict[str, tfds.features.FeatureConnector]:
        """Builder-specific features added to the shared record."""
        return {}

    def download_and_prepare(self, *, download_dir=None, download_config=None, file_format=None):
        # No GCS lookup of prebuilt data: these datasets are not there and the job may be offline.
        download_config = download_config or tfds.download.DownloadConfig(try_download_gcs=False)
        rebuild = download_config.download_mode == tfds.download.GenerateMode.FORCE_REDOWNLOAD
        if self.is_prepared() and not rebuild:
            self._check_same_inputs()
        result = super().download_and_prepare(download_dir=download_dir,
                                              download_config=download_config,
                                              file_format=file_format)
        path = epath.Path(self.data_dir) / BUILD_FILE
        if rebuild or not path.exists():
            path.write_text(json.dumps(self._inputs(), indent=1, default=str))
        return result

    def _inputs(self) -> dict[str, Any]:
        """What a build was made from: the raw and image folders and the config's own fields."""
        config, fields = self.builder_config, {}
        if config is not None and dataclasses.is_dataclass(config):
            base = {f.name for f in dataclasses.fields(tfds.core.BuilderConfig)}
            fields = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)
                      if f.name not in base}
        raw = str(epath.Path(self.raw_dir).resolve()) if self.raw_dir else None
        images = str(epath.Path(self.image_root).resolve()) if self.image_root else None
        return json.loads(json.dumps({"raw_dir": raw, "image_root": images, "config": fields},
                                     default=str))

    def _check_same_inputs(self) -> None:
        """A finished build is reused only for the same inputs: another raw folder (or config
        field) under the same name would otherwise silently give the old records."""
        path = epath.Path(self.data_dir) / BUILD_FILE
        if not path.exists():
            return  # built before tgg_build.json existed: nothing to compare with
        saved, now = json.loads(path.read_text()), self._inputs()
        name = f"{self.name}/{self.builder_config.name}" if self.builder_config else self.name
        if now["raw_dir"] is not None and saved.get("raw_dir") not in (None, now["raw_dir"]):
            raise UserError(f"{name} in {self.data_dir} was built from --raw_dir {saved['raw_dir']}, "
                            f"not {now['raw_dir']}; pass --overwrite to rebuild it from the new folder")
        if saved.get("image_root") != now["image_root"]:
            raise UserError(f"{name} in {self.data_dir} was built from --image_root "
                            f"{saved.get('image_root')}, not {now['image_root']}; pass --overwrite "
                            "to rebuild it from the new folder")
        changed = {k: (saved.get("config", {}).get(k), v) for k, v in now["config"].items()
                   if saved.get("config", {}).get(k, v) != v}
        if changed:
            what = ", ".join(f"{k} {old!r} (now {new!r})" for k, (old, new) in changed.items())
            raise UserError(f"{name} in {self.data_dir} was built with {what}; pass --overwrite to "
                            f"rebuild it, or build under another --config name")

    def _split_generators(self, dl_manager):
        raw_dir = None
        if self.NEEDS_RAW:
            raw_dir = self.raw_dir or epath.Path(dl_manager.manual_dir)
            if not raw_dir.is_dir():
                raise FileNotFoundError(f"{self.name}: raw_dir {raw_dir} is not a directory")
        splits = self._raw_splits(raw_dir)
        if not splits:
            raise FileNotFoundError(f"{self.name}: no raw data for any split under {raw_dir}")
        return {split: self._generate_examples(split, entries) for split, entries in splits.items()}

    @abc.abstractmethod
    def _raw_splits(self, raw_dir: epath.Path | None) -> dict[str, Sequence[Entry]]:
        """Split name -> the raw entries of that split (a list, so progress has a total)."""

    @abc.abstractmethod
    def _entry_records(self, split: str, entry: Entry) -> Iterable[dict[str, Any] | Skip]:
        """One raw entry -> its records; raise Skip to drop it, yield Skip to drop a part."""

    def _generate_examples(self, split: str,
                           entries: Sequence[Entry]) -> Iterator[tuple[str, dict]]:
        skipped = self.skipped.setdefault(split, collections.Counter())
        written = 0
        progress = _progress(entries, f"{self.name} {split}", self.show_progress)
        for index, entry in enumerate(progress):
            part = 0
            try:
                for record in self._entry_records(split, entry):
                    if isinstance(record, Skip):
                        self._count_skip(split, record)
                        continue
                    # The key is unique by construction; dataset ids sometimes repeat.
                    yield f"{index}/{part}", record
                    part += 1
                    written += 1
            except Skip as skip:
                self._count_skip(split, skip)
            except ENTRY_ERRORS as e:
                self._count_skip(split, Skip("unreadable annotation", entry.id, entry.source,
                                             f"{type(e).__name__}: {e}"))
        if not written:
            raise ValueError(f"{self.name}: split {split!r} has no usable records "
                             f"({len(entries)} raw entries, skipped: {dict(skipped)})")

    def _count_skip(self, split: str, skip: Skip) -> None:
        self.skipped.setdefault(split, collections.Counter())[skip.reason] += 1
        logging.warning("%s %s: skipped %s", self.name, split, skip)


def _progress(entries: Sequence[Any], description: str, enabled: bool):
    if not enabled:
        return entries
    from tqdm.auto import tqdm  # only the CLI shows progress

    return tqdm(entries, desc=description, unit=" entries", total=len(entries))
