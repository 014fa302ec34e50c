"""Imports run one way: every module of the package is on a floor of the table below and imports
only from floors beneath it, or from its own part of its floor; and no module imports a tgg_jax
module inside a function (a cycle dodged is still a cycle). Read from the source with `ast`, so
nothing is imported to check it."""

import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "tgg_jax"

# (module or package, floor). The longest entry that names a module is its part; a module may
# import its own part and anything on a lower floor, nothing else.
FLOORS = {
    # 0: what every part agrees on, with no dependency of its own in the package.
    "tgg_jax": 0, "tgg_jax.spec": 0, "tgg_jax.errors": 0, "tgg_jax.sharding": 0,
    "tgg_jax.distributed": 0,
    # 1: the ground floor. Models and data know nothing of each other.
    "tgg_jax.models": 1, "tgg_jax.data": 1,
    # 2-3: the library that joins them: checkpoints, decoding, pictures; answering questions.
    "tgg_jax.checkpoint": 2, "tgg_jax.generate": 2, "tgg_jax.visualize": 2,
    "tgg_jax.inference": 3,
    # 4: what builds on them, each part on its own.
    "tgg_jax.train": 4, "tgg_jax.evals": 4, "tgg_jax.convert": 4, "tgg_jax.synth": 4,
    "tgg_jax.torch": 4, "tgg_jax.attention_maps": 4,
    # 5: the tiny CPU demo, which fills the trainer's extension points (tgg_jax/train/hooks.py).
    "tgg_jax.tiny": 5,
    # 6: the command-line tools.
    "tgg_jax.train.main": 6, "tgg_jax.evals.main": 6, "tgg_jax.convert.cli": 6,
    "tgg_jax.data.cli": 6, "tgg_jax.synth.cli": 6, "tgg_jax.predict": 6,
}


def part_of(module: str) -> str:
    """The longest FLOORS entry that is `module` or a package holding it."""
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        name = ".".join(parts[:n])
        if name in FLOORS:
            return name
    raise KeyError(module)


def modules() -> dict[str, pathlib.Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imports(module: str, path: pathlib.Path):
    """(imported tgg_jax module, line, inside a function?) for every import statement."""
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]

    def walk(node, in_function):
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                for alias in child.names:
                    yield alias.name, child.lineno, in_function
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.split(".")[: len(package.split(".")) - child.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                for alias in child.names:  # `from tgg_jax.data import coords` imports tgg_jax.data.coords
                    yield (f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base,
                           child.lineno, in_function)
            yield from walk(child, inside)

    for name, line, in_function in walk(tree, False):
        if name == "tgg_jax" or name.startswith("tgg_jax."):
            yield name, line, in_function


MODULES = modules()


def test_every_module_is_on_a_floor():
    assert not [m for m in MODULES if part_of(m) == "tgg_jax" and m != "tgg_jax"]


def test_imports_run_down_the_floors():
    upward = []
    for module, path in MODULES.items():
        mine = part_of(module)
        for name, line, _ in imports(module, path):
            theirs = part_of(name)
            if theirs != mine and FLOORS[theirs] >= FLOORS[mine]:
                upward.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {module} ({mine}, floor "
                              f"{FLOORS[mine]}) imports {name} ({theirs}, floor {FLOORS[theirs]})")
    assert not upward, "\n".join(upward)


def test_no_tgg_jax_import_inside_a_function():
    late = [f"{path.relative_to(PACKAGE.parent)}:{line}: {name}"
            for module, path in MODULES.items()
            for name, line, in_function in imports(module, path) if in_function]
    assert not late, "\n".join(late)


def test_the_table_catches_what_it_should(tmp_path):
    """The rules hold on a made-up module: a model importing data, and a late import."""
    assert part_of("tgg_jax.models.tgg") == "tgg_jax.models"
    assert part_of("tgg_jax.train.main") == "tgg_jax.train.main"
    assert FLOORS[part_of("tgg_jax.data.preprocess")] >= FLOORS[part_of("tgg_jax.models.tgg")]
    source = "from tgg_jax.data import preprocess\n\ndef f():\n    from tgg_jax import spec\n"
    probe = tmp_path / "probe.py"
    probe.write_text(source)
    found = list(imports("tgg_jax.models.probe", probe))
    assert found == [("tgg_jax.data.preprocess", 1, False), ("tgg_jax.spec", 4, True)]
