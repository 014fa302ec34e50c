"""Checks of model answers against the JSON each prompt asks for.

An answer that cannot be used at all raises `Bad(reason)`; parts of an answer that are wrong
(a triple naming an unknown object, a QA whose placeholders do not match the objects) are
dropped and counted in `problems` by reason, so one bad QA never costs the image.
"""

from __future__ import annotations

import collections
import json
import re
from typing import Any

PLACEHOLDER = re.compile(r"\{(obj\d+)\}")
_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$")

NOT_JSON = "answer not JSON"
OFF_SCHEMA = "answer off schema"
NOT_IN_L1 = "object not in L1"
BAD_PLACEHOLDER = "placeholders do not match objects"


class Bad(Exception):
    """An unusable answer; `reason` is the count key."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason, self.detail = reason, detail


def json_object(answer: str) -> dict[str, Any]:
    """The JSON object of an answer; code fences and text around the outermost {...} are allowed."""
    text = _FENCE.sub("", answer.strip())
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end < start:
        raise Bad(NOT_JSON, "no JSON object")
    try:
        value = json.loads(text[start:end + 1])
    except json.JSONDecodeError as e:
        raise Bad(NOT_JSON, str(e)) from None
    if not isinstance(value, dict):
        raise Bad(NOT_JSON, "not an object")
    return value


def _text(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def recognition(answer: str, max_objects: int) -> list[str]:
    """L1: distinct non-empty phrases (lower case, single spaces), at most max_objects."""
    objects = json_object(answer).get("objects")
    if not isinstance(objects, list) or not objects:
        raise Bad(OFF_SCHEMA, '"objects" is not a non-empty list')
    phrases = []
    for item in objects:
        phrase = _text(item)
        if phrase is None:
            raise Bad(OFF_SCHEMA, f"object {item!r} is not a phrase")
        phrase = re.sub(r"\s+", " ", phrase.lower()).rstrip(".")
        if phrase not in phrases:
            phrases.append(phrase)
    return phrases[:max_objects]


def relations(answer: str, ids: set[str], problems: collections.Counter) -> list[list[str]]:
    """L2: [id1, relation, id2] triples over known ids; others dropped and counted."""
    triples = json_object(answer).get("relations")
    if not isinstance(triples, list):
        raise Bad(OFF_SCHEMA, '"relations" is not a list')
    out = []
    for triple in triples:
        if (not isinstance(triple, list) or len(triple) != 3
                or not all(_text(v) for v in triple)):
            problems[OFF_SCHEMA] += 1
            continue
        a, relation, b = (v.strip() for v in triple)
        if a not in ids or b not in ids or a == b:
            problems[NOT_IN_L1] += 1
            continue
        if [a, relation, b] not in out:
            out.append([a, relation, b])
    return out


def _placeholders_known(text: str, ids: set[str]) -> bool:
    # A stray brace means the model mangled a placeholder ("{obj 1}", "{red cup}").
    names = PLACEHOLDER.findall(text)
    return all(n in ids for n in names) and text.count("{") == len(names) == text.count("}")


def _qa(item: Any, ids: set[str], problems: collections.Counter) -> dict[str, Any] | None:
    if not isinstance(item, dict) or not _text(item.get("question")) or not _text(item.get("answer")):
        problems[OFF_SCHEMA] += 1
        return None
    qa = {"question": item["question"].strip(), "answer": item["answer"].strip()}
    texts = [qa["question"], qa["answer"]]
    if item.get("options") is not None:
        options = item["options"]
        if (not isinstance(options, list) or not 2 <= len(options) <= 4
                or not all(isinstance(o, str) and PLACEHOLDER.fullmatch(o.strip()) for o in options)
                or len({o.strip() for o in options}) != len(options)
                or qa["answer"] not in [o.strip() for o in options]):
            problems[BAD_PLACEHOLDER] += 1
            return None
        qa["options"] = [o.strip() for o in options]
        texts += qa["options"]
    if not all(_placeholders_known(t, ids) for t in texts) or not PLACEHOLDER.search(qa["question"]):
        problems[BAD_PLACEHOLDER] += 1
        return None
    return qa


def local_qa(answer: str, ids: set[str], problems: collections.Counter) -> dict[str, Any]:
    """{"descriptions": {id: text}, "qas": [{question, answer, options?}]} with bad parts dropped."""
    value = json_object(answer)
    descriptions, qas = value.get("descriptions", {}), value.get("qas", [])
    if not isinstance(descriptions, dict) or not isinstance(qas, list):
        raise Bad(OFF_SCHEMA, '"descriptions" must be an object and "qas" a list')
    clean = {}
    for key, text in descriptions.items():
        if key not in ids:
            problems[NOT_IN_L1] += 1
        elif _text(text) is None or "{" in text:
            problems[OFF_SCHEMA] += 1
        else:
            clean[key] = text.strip()
    out = [qa for qa in (_qa(item, ids, problems) for item in qas) if qa is not None]
    if not clean and not out:
        raise Bad(OFF_SCHEMA, "no usable description or QA")
    return {"descriptions": clean, "qas": out}


def conversation(answer: str, ids: set[str], problems: collections.Counter) -> list[dict[str, str]]:
    """[{question, answer}] rounds; the whole conversation goes if one round is bad."""
    rounds = json_object(answer).get("conversation")
    if not isinstance(rounds, list) or not rounds:
        raise Bad(OFF_SCHEMA, '"conversation" is not a non-empty list')
    out = []
    for item in rounds:
        if not isinstance(item, dict) or not _text(item.get("question")) or not _text(item.get("answer")):
            raise Bad(OFF_SCHEMA, "a round lacks question or answer")
        pair = {"question": item["question"].strip(), "answer": item["answer"].strip()}
        if not all(_placeholders_known(t, ids) for t in pair.values()):
            raise Bad(BAD_PLACEHOLDER, "a round names an unknown object")
        out.append(pair)
    if not any(PLACEHOLDER.search(p["answer"]) for p in out):
        raise Bad(BAD_PLACEHOLDER, "no answer grounds an object")
    return out


def description(answer: str, ids: set[str]) -> str:
    """The description text; it must ground at least one object and name no unknown one."""
    text = _text(json_object(answer).get("description"))
    if text is None:
        raise Bad(OFF_SCHEMA, '"description" is not a text')
    if not _placeholders_known(text, ids) or not PLACEHOLDER.search(text):
        raise Bad(BAD_PLACEHOLDER, "description names an unknown object or none")
    return text
