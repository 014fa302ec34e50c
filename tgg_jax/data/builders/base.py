"""The base of every tgg-jax TFDS builder: ArrayRecord output, a raw folder, skip counting, and
a finished build reused only for the same inputs."""

from __future__ import annotations

import abc
import collections
import dataclasses
import inspect
import json
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, ClassVar

import tensorflow_datasets as tfds
from absl import logging
from etils import epath

from tgg_jax.data.builders.raw_entries import ENTRY_ERRORS, Entry, Skip
from tgg_jax.data.builders.images import ImageReader
from tgg_jax.data.builders.records import record_features
from tgg_jax.errors import UserError

# Written beside a build's dataset_info.json: where its raw files came from.
BUILD_FILE = "tgg_build.json"


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
