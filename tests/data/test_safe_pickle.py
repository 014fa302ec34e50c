"""safe_pickle: plain data loads (including Python 2 pickles like RefCOCO's refs files); anything
that names a global is refused before it can run."""

import os
import pathlib
import pickle
import re

import pytest

from tgg_jax.data import safe_pickle

REFS = [
    {"ref_id": 0, "ann_id": 11, "image_id": 1, "split": "train", "category_id": 3,
     "file_name": "COCO_train2014_000000000001_11.jpg",
     "sent_ids": [0, 1],
     "sentences": [{"sent_id": 0, "sent": "left man", "raw": "Left man.",
                    "tokens": ["left", "man"]},
                   {"sent_id": 1, "sent": "guy in blue", "raw": "guy in blue",
                    "tokens": ["guy", "in", "blue"]}]},
    {"ref_id": 1, "ann_id": 12, "image_id": 2, "split": "testA", "sent_ids": [2],
     "sentences": [{"sent_id": 2, "sent": "café sign", "raw": None, "tokens": ("café", "sign")}],
     "score": 0.5, "flag": True, "missing": None},
]


class _Boom:
    """Unpickling this would run `touch MARKER` through os.system."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_plain_refs_structure_loads(tmp_path, protocol):
    path = tmp_path / "refs(unc).p"
    path.write_bytes(pickle.dumps(REFS, protocol=protocol))
    assert safe_pickle.load(path) == REFS


def test_bytes_load_at_protocol_3_and_up():
    data = {"blob": b"\x00\x01"}
    assert safe_pickle.loads(pickle.dumps(data, protocol=3)) == data


def test_python2_byte_strings_decode_as_text():
    # What Python 2's cPickle.dump(['hello', {'sent': 'man'}], f, 2) writes: SHORT_BINSTRING
    # opcodes ('U'), which Python 3 must decode.
    data = b"\x80\x02]q\x00(U\x05helloq\x01}q\x02U\x04sentq\x03U\x03manq\x04sq\x05e."
    assert safe_pickle.loads(data) == ["hello", {"sent": "man"}]
    # The same at protocol 0, as Python 2's default `pickle.dump(obj, f)` writes it.
    assert safe_pickle.loads(b"(lp0\nS'hello'\np1\na.") == ["hello"]


@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
def test_reduce_to_os_system_is_refused_and_not_run(tmp_path, protocol):
    marker = tmp_path / "pwned"
    path = tmp_path / "refs(unc).p"
    path.write_bytes(pickle.dumps([{"ref_id": 0}, _Boom(marker)], protocol=protocol))
    with pytest.raises(pickle.UnpicklingError, match=re.escape(str(path))) as err:
        safe_pickle.load(path)
    assert "system" in str(err.value)
    assert not marker.exists()
    # Control: the plain pickle module would have run it (so the test can fail).
    pickle.loads(path.read_bytes())
    assert marker.exists()


def test_hand_written_global_opcodes_are_refused(tmp_path):
    marker = tmp_path / "pwned"
    attacks = [
        f"cos\nsystem\n(S'touch {marker}'\ntR.".encode(),            # GLOBAL + REDUCE
        f"(S'touch {marker}'\nios\nsystem\n.".encode(),               # INST
        b"cbuiltins\neval\n(S'1+1'\ntR.",                               # any builtin too
        b"\x80\x04\x95\x00\x00\x00\x00\x00\x00\x00\x00\x8c\x08builtins\x8c\x03set\x93)R.",
    ]
    for data in attacks:
        with pytest.raises(pickle.UnpicklingError, match="refusing"):
            safe_pickle.loads(data, source="attack.p")
    assert not marker.exists()


def test_truncated_pickle_names_the_file(tmp_path):
    path = tmp_path / "refs(umd).p"
    path.write_bytes(pickle.dumps(REFS, protocol=2)[:50])
    with pytest.raises(pickle.UnpicklingError, match=re.escape(str(path))):
        safe_pickle.load(path)


def test_project_never_calls_bare_pickle_load():
    root = pathlib.Path(__file__).resolve().parents[2] / "tgg_jax"
    offenders = []
    for path in root.rglob("*.py"):
        if path.name == "safe_pickle.py":
            continue
        text = path.read_text()
        if re.search(r"\bpickle\.(load|loads|Unpickler)\b|\bcPickle\b|\bdill\b", text):
            offenders.append(str(path))
    assert not offenders
