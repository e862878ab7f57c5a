"""The package's layers: every module imports only from its own layer or the ones below.

The list is the README's "Design" section, bottom up. Every import counts, also those inside
functions (the CLI imports lazily, and a lazy import up a layer is still a dependency).
"""

import ast
from pathlib import Path

import pytest

import datasetgan

PACKAGE = Path(datasetgan.__file__).parent
LAYERS = [  # bottom up; a name stands for the module and everything under it
    ["errors", "device", "fileio", "labels", "progress"],
    ["features", "uncertainty", "metrics", "viz", "formats.masks"],
    ["generators"],
    ["interpreter"],
    ["workspace", "formats.dataset", "annotation"],
    ["factory", "pipeline", "discovery", "engines"],
    ["segment"],
    ["worlds", "gan"],
    ["annotate", "formats.importers", "formats.parquet", "release"],
    ["demo", "experiments"],
    ["cli", "__main__"],
]
PACKAGES_ONLY = {"", "formats"}  # namespaces with no code of their own (their __init__ is empty)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(name: str) -> int:
    """The layer of a module (dotted, without the `datasetgan.` prefix): its longest listed prefix."""
    matches = [(len(entry), level) for level, entries in enumerate(LAYERS) for entry in entries
               if name == entry or name.startswith(entry + ".")]
    if not matches:
        raise AssertionError(f"datasetgan.{name} is in no layer: add it to LAYERS here and to the README")
    return max(matches)[1]


def is_module(name: str) -> bool:
    path = PACKAGE.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every datasetgan import in the file, `from datasetgan.x import y` resolved
    to the module x.y when y is one."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            base = node.module
            if node.level:  # relative: from the importing module's package
                package = module_name(path).split(".")[: -node.level or None]
                base = ".".join(["datasetgan", *package, node.module])
            names = [f"{base}.{alias.name}" if is_module(f"{base}.{alias.name}".removeprefix("datasetgan."))
                     else base for alias in node.names]
        else:
            continue
        found += [(node.lineno, name.removeprefix("datasetgan").lstrip(".")) for name in names
                  if name == "datasetgan" or name.startswith("datasetgan.")]
    return found


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_every_module_is_in_a_layer():
    for path in MODULES:
        if module_name(path) not in PACKAGES_ONLY:
            layer_of(module_name(path))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p) or "datasetgan")
def test_imports_go_down_the_layers(path):
    importer = module_name(path)
    if importer in PACKAGES_ONLY:
        assert not imported_modules(path), f"{path} should stay empty"
        return
    upward = [f"{path.relative_to(PACKAGE)}:{line} imports datasetgan.{name} (layer {layer_of(name)}) "
              f"from layer {layer_of(importer)}" for line, name in imported_modules(path)
              if name not in PACKAGES_ONLY and layer_of(name) > layer_of(importer)]
    assert not upward, "imports against the layers (see README, Design):\n" + "\n".join(upward)


def test_the_check_sees_imports_inside_functions(tmp_path):
    source = tmp_path / "probe.py"
    source.write_text("def f():\n    from datasetgan import pipeline\n    import datasetgan.cli\n")
    assert [name for _, name in imported_modules(source)] == ["pipeline", "cli"]
