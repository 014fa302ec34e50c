"""Prompt files: configs/synth/prompts/<version>/<name>.txt.

A file starts with `# key: value` header lines (prompt, version), then a `=== system ===` and a
`=== user ===` section. Placeholders are `$name` (string.Template), so JSON examples in the text
need no escaping.
"""

from __future__ import annotations

import dataclasses
import pathlib
import re
import string

NAMES = ("recognition", "relations", "local_qa", "conversation", "description")
_SECTION = re.compile(r"^=== (system|user) ===$", re.M)


@dataclasses.dataclass(frozen=True)
class Prompt:
    name: str
    version: str
    system: str
    user: str

    def render(self, **values) -> tuple[str, str]:
        """(system, user) with the user text's $placeholders filled; a missing one is an error."""
        return self.system, string.Template(self.user).substitute(values)


def parse(text: str, path: str) -> Prompt:
    header = dict(re.findall(r"^# *(\w+): *(.+?) *$", text.split("===", 1)[0], re.M))
    parts = _SECTION.split(text)
    sections = dict(zip(parts[1::2], (p.strip() for p in parts[2::2])))
    if set(sections) != {"system", "user"} or "prompt" not in header or "version" not in header:
        raise ValueError(f"{path}: a prompt file needs '# prompt:' and '# version:' headers and "
                         "'=== system ===' and '=== user ===' sections")
    return Prompt(header["prompt"], header["version"], sections["system"], sections["user"])


def load(directory: str | pathlib.Path, version: str) -> dict[str, Prompt]:
    """Every prompt of `version`; each file's header must name that version."""
    folder = pathlib.Path(directory) / version
    prompts = {}
    for name in NAMES:
        path = folder / f"{name}.txt"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: prompt file missing (prompts.dir / prompts.version)")
        prompt = parse(path.read_text(encoding="utf-8"), str(path))
        if prompt.version != version or prompt.name != name:
            raise ValueError(f"{path}: header says prompt {prompt.name!r} version "
                             f"{prompt.version!r}, expected {name!r} {version!r}")
        prompts[name] = prompt
    return prompts
