"""The record every tgg-jax TFDS builder writes (SPEC §2), one per conversation::

    id             str      the dataset's own id (not necessarily unique; the TFDS key is)
    image          bytes    the image file as found (PNG/JPEG/...); b"" for text-only records
    width, height  int32    size of the image as displayed (EXIF orientation applied; 0 for
                            text-only), to map boxes back
    objects        [N, 4]   float32 boxes [x1, y1, x2, y2] in displayed pixels, one per <object>
                            in the human turns, in order of appearance
    conversations  [{from: "human" | "gpt", value: str}], starting with human, alternating
    source         str      dataset name
    ...                     builder extras (task, gt_box, label, ...)

Read back through `tfds.data_source`, strings come as bytes and `conversations` as
`{"from": [bytes, ...], "value": [bytes, ...]}`; `decode_record` turns that into str / lists.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds


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
