"""The architecture, read from the source with ``ast`` (nothing is imported or run).

* Imports run one way: ``core`` <- ``records`` <- ``pipeline`` <- ``trainer``, and nothing of
  the library imports ``benchmarks``. Inside ``trainer/``, the commands are on top (nothing
  imports them), ``inference/`` and ``serving/`` never import ``training/``, ``models/``
  imports none of its siblings; the input listing (``records/inputs/``) imports none of the
  rest of ``records/``. Every import counts,
  the lazy ones inside functions and those under ``if TYPE_CHECKING:`` too.
* No import circles: no module reaches itself through the imports of the modules it
  imports (counted the same way). A circle is one concept split in two modules: merge
  them, or move what both need into a third that both import.
* No library module (everything outside ``tests/``) is over 400 lines, and no folder holds
  more than 15 modules, so ``ls`` shows the architecture.
* ``setup.cfg`` lists every package, so an install outside the checkout has all of them.
"""

from __future__ import annotations

import ast
import configparser
import pathlib

import pytest

from conftest import REPO_ROOT

# Every folder of Python code outside tests/: what the limits apply to.
LIBRARY = ("core", "records", "pipeline", "trainer", "benchmarks", "scripts")
MAX_MODULE_LINES = 400
MAX_MODULES_PER_FOLDER = 15

_LAYERS = ("core", "records", "pipeline", "trainer", "benchmarks")

# (importer, what it must not import, why). A name covers its subpackages and modules.
RULES = (
    *(
        (lower, higher, f"{lower} is below {higher}")
        for i, lower in enumerate(_LAYERS)
        for higher in _LAYERS[i + 1 :]
    ),
    ("trainer.inference", "trainer.training", "inference never imports training"),
    ("trainer.serving", "trainer.training", "serving never imports training"),
    *(
        ("trainer.models", sibling, "models/ is the bottom of trainer/")
        for sibling in ("trainer.training", "trainer.inference", "trainer.serving", "trainer.audit")
    ),
    *(
        (sub, "trainer.audit", "the audit is a tool on top of the model")
        for sub in ("trainer.training", "trainer.inference", "trainer.serving")
    ),
    ("trainer.training", "trainer.inference", "training never imports inference"),
    ("trainer.training", "trainer.serving", "training never imports serving"),
    ("trainer.plots", "trainer", "the pictures are shared by training and inference"),
    ("records.inputs", "records", "the input listing is the bottom of records/"),
)


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def python_files(root: pathlib.Path) -> list[pathlib.Path]:
    """Every .py file of the library folders under ``root``."""
    return sorted(
        path
        for folder in LIBRARY
        if (root / folder).is_dir()
        for path in (root / folder).rglob("*.py")
    )


def module_name(root: pathlib.Path, path: pathlib.Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(root: pathlib.Path, path: pathlib.Path, known: set[str]) -> set[str]:
    """The project modules (or packages) ``path`` imports anywhere in its source.

    ``from a.b import c`` names ``a.b.c`` when that is a module or package, else ``a.b``.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module_name(root, path)
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # Relative: resolved against the importer's package.
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                full = f"{base}.{alias.name}"
                names.add(full if full in known else base)
    top = {name.split(".")[0] for name in known}
    return {name for name in names if name.split(".")[0] in top}


def import_violations(root: pathlib.Path) -> list[str]:
    """One line per import that breaks a rule of ``RULES``, or imports a trainer command."""
    files = python_files(root)
    known = {module_name(root, path) for path in files}
    # records.verify and pipeline.service are libraries too; trainer's commands are only commands.
    commands = {name for name in _console_script_modules(root) if _within(name, "trainer")}
    problems = []
    for path in files:
        importer = module_name(root, path)
        for target in sorted(imported_modules(root, path, known)):
            for source, forbidden, why in RULES:
                if (
                    _within(importer, source)
                    and _within(target, forbidden)
                    and not _within(target, source)
                ):
                    problems.append(f"{path.relative_to(root)} imports {target}: {why}")
            if target in commands and target != importer:
                problems.append(f"{path.relative_to(root)} imports {target}: a command")
    return problems


def import_graph(root: pathlib.Path) -> dict[str, set[str]]:
    """Module -> the project modules (or packages) it imports, every import counted."""
    files = python_files(root)
    known = {module_name(root, path) for path in files}
    graph = {}
    for path in files:
        importer = module_name(root, path)
        graph[importer] = imported_modules(root, path, known) - {importer}
    return graph


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's components of ``graph``, iteratively (no recursion limit to meet)."""
    index, low, on_stack, stack, components = {}, {}, set(), [], []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, targets = work[-1]
            target = next((t for t in targets if t in graph), None)
            if target is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while not component or component[-1] != node:
                        component.append(stack.pop())
                        on_stack.discard(component[-1])
                    components.append(component)
            elif target not in index:
                index[target] = low[target] = len(index)
                stack.append(target)
                on_stack.add(target)
                work.append((target, iter(sorted(graph[target]))))
            elif target in on_stack:
                low[node] = min(low[node], index[target])
    return components


def _circle_through(graph: dict[str, set[str]], members: set[str]) -> list[str]:
    """The shortest import path from the first of ``members`` back to itself, inside them."""
    start = min(members)
    came_from = {start: None}
    queue = [start]
    for node in queue:
        for target in sorted(graph[node] & members):
            if target == start:
                path = [node]
                while came_from[path[-1]] is not None:
                    path.append(came_from[path[-1]])
                return [start, *reversed(path[:-1]), start]
            if target not in came_from:
                came_from[target] = node
                queue.append(target)
    raise AssertionError(f"no circle through {sorted(members)}")


def import_circles(root: pathlib.Path) -> list[str]:
    """One line per import circle (a set of modules that import each other), naming one
    circle through them: ``a -> b -> a``."""
    graph = import_graph(root)
    return sorted(
        f"import circle: {' -> '.join(_circle_through(graph, set(component)))}"
        for component in _strongly_connected(graph)
        if len(component) > 1
    )


def _console_script_modules(root: pathlib.Path) -> set[str]:
    config = configparser.ConfigParser()
    config.read(root / "setup.cfg")
    if not config.has_section("options.entry_points"):
        return set()
    lines = config["options.entry_points"]["console_scripts"].strip().splitlines()
    return {line.split("=")[1].strip().split(":")[0] for line in lines}


def test_imports_run_one_way():
    assert import_violations(REPO_ROOT) == []


def test_no_import_circles():
    circles = import_circles(REPO_ROOT)
    assert circles == [], (
        "one concept split in two modules: merge them, or move what both need into a third "
        f"that both import: {circles}"
    )


# Photos become records and model input through TensorFlow ops alone (records.photo), so
# the exported SavedModel runs the same code; a Pillow import there would be a second
# decoder. Pillow stays for benchmarks/ and the tests (an independent encoder/decoder).
PILLOW_FREE = ("core", "records", "pipeline", "trainer")


def pillow_imports(root: pathlib.Path) -> list[str]:
    """The modules of ``PILLOW_FREE`` that import Pillow (``PIL``) anywhere."""
    found = []
    for path in python_files(root):
        if path.relative_to(root).parts[0] not in PILLOW_FREE:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            if any(name == "PIL" or name.startswith("PIL.") for name in names):
                found.append(str(path.relative_to(root)))
    return found


def test_the_library_never_imports_pillow(tmp_path):
    assert pillow_imports(REPO_ROOT) == []
    _empty_tree(tmp_path, ("records/photo.py", "benchmarks/near_copies.py"))
    (tmp_path / "records" / "photo.py").write_text("def f():\n    from PIL import Image\n")
    (tmp_path / "benchmarks" / "near_copies.py").write_text("import PIL.Image\n")
    assert pillow_imports(tmp_path) == ["records/photo.py"]


def test_no_library_module_is_too_long():
    too_long = {
        str(path.relative_to(REPO_ROOT)): lines
        for path in python_files(REPO_ROOT)
        if (lines := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    }
    assert too_long == {}, f"over {MAX_MODULE_LINES} lines: split by concern"


def test_no_folder_holds_too_many_modules():
    counts = {}
    for path in python_files(REPO_ROOT):
        if path.name != "__init__.py":
            folder = str(path.parent.relative_to(REPO_ROOT))
            counts[folder] = counts.get(folder, 0) + 1
    crowded = {folder: count for folder, count in counts.items() if count > MAX_MODULES_PER_FOLDER}
    assert crowded == {}, f"over {MAX_MODULES_PER_FOLDER} modules: group them in subpackages"


def test_every_folder_of_code_is_checked():
    folders = {
        path.relative_to(REPO_ROOT).parts[0]
        for path in REPO_ROOT.glob("*/**/*.py")
        if not any(part.startswith(".") or part == "build" for part in path.parts)
    }
    assert folders - {"tests"} <= set(LIBRARY)


def test_setup_cfg_lists_every_package():
    config = configparser.ConfigParser()
    config.read(REPO_ROOT / "setup.cfg")
    listed = set(config["options"]["packages"].split())
    on_disk = {
        module_name(REPO_ROOT, path)
        for path in python_files(REPO_ROOT)
        if path.name == "__init__.py"
    }
    assert listed == on_disk


def _empty_tree(root: pathlib.Path, names) -> None:
    """Empty modules ``names`` (paths) under ``root``, with their packages' __init__.py."""
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        for package in path.relative_to(root).parents:
            if package.parts:
                (root / package / "__init__.py").touch()
        path.write_text("")


@pytest.mark.parametrize(
    "importer, source, problem",
    [
        # A lazy import inside a function counts.
        (
            "trainer/inference/evaluation.py",
            "def evaluate():\n    from trainer.training import fit\n",
            "trainer/inference/evaluation.py imports trainer.training.fit",
        ),
        (
            "trainer/serving/export.py",
            "import trainer.training.config\n",
            "trainer/serving/export.py imports trainer.training.config",
        ),
        (
            "pipeline/decode.py",
            "from trainer import plots\n",
            "pipeline/decode.py imports trainer.plots",
        ),
        (
            "records/inputs/sources.py",
            "from .. import schema\n",
            "records/inputs/sources.py imports records.schema",
        ),
        ("core/files.py", "from records.inputs import labels\n", "core/files.py imports records"),
        (
            "trainer/models/model.py",
            "from trainer.train import run\n",
            "trainer/models/model.py imports trainer.train: a command",
        ),
    ],
)
def test_a_planted_violation_is_found(tmp_path, importer, source, problem):
    _empty_tree(
        tmp_path,
        (
            "core/files.py",
            "records/schema.py",
            "records/inputs/labels.py",
            "records/inputs/sources.py",
            "pipeline/decode.py",
            "trainer/plots.py",
            "trainer/train.py",
            "trainer/models/model.py",
            "trainer/training/fit.py",
            "trainer/training/config.py",
            "trainer/inference/evaluation.py",
            "trainer/serving/export.py",
        ),
    )
    (tmp_path / "setup.cfg").write_text(
        "[options.entry_points]\nconsole_scripts =\n    train = trainer.train:run\n"
    )
    assert import_violations(tmp_path) == []
    (tmp_path / importer).write_text(source)
    found = import_violations(tmp_path)
    assert any(line.startswith(problem) for line in found), found


@pytest.mark.parametrize(
    "sources, circle",
    [
        # Under TYPE_CHECKING (the old trainer.audit.data <-> report pair) it still counts.
        (
            {
                "trainer/audit/data.py": "from trainer.audit import report\n",
                "trainer/audit/report.py": (
                    "from typing import TYPE_CHECKING\n"
                    "if TYPE_CHECKING:\n    from trainer.audit.data import Findings\n"
                ),
            },
            "trainer.audit.data -> trainer.audit.report -> trainer.audit.data",
        ),
        # A lazy import inside a function, and a relative one, count too.
        (
            {
                "trainer/training/callbacks.py": "from . import resume\n",
                "trainer/training/resume.py": (
                    "def restore():\n    from trainer.training.callbacks import Checkpoint\n"
                ),
            },
            "trainer.training.callbacks -> trainer.training.resume -> trainer.training.callbacks",
        ),
        # Three modules, plain ``import a.b.c``, across packages.
        (
            {
                "records/schema.py": "import records.manifest\n",
                "records/manifest.py": "from core import files\n",
                "core/files.py": "import records.schema as schema\n",
            },
            "core.files -> records.schema -> records.manifest -> core.files",
        ),
    ],
)
def test_a_planted_import_circle_is_found(tmp_path, sources, circle):
    _empty_tree(tmp_path, ("core/files.py", *sources))
    assert import_circles(tmp_path) == []
    for name, source in sources.items():
        (tmp_path / name).write_text(source)
    assert import_circles(tmp_path) == [f"import circle: {circle}"]
