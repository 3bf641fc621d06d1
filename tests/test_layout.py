"""The package layout: the import map of docs/layout.md, enforced, and the folder -> import name mapping."""
from __future__ import annotations

import ast
import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _folder_links() -> dict[str, Path]:
    """The folder -> import name map, read where it lives: each symlink in scaseg/ (name -> what it points to)."""
    return {p.name: Path(os.readlink(p)) for p in sorted((ROOT / "scaseg").iterdir()) if p.is_symlink()}


# folder -> import name (docs/layout.md): scaseg/ itself, and each top-level folder that scaseg/ links to.
FOLDERS = {"scaseg": "scaseg", **{name: f"scaseg.{name}" for name in _folder_links()}}


def _module_name(path: str) -> str:
    """`runtime/backends/tensorrt.py` -> `scaseg.runtime.backends.tensorrt`; a folder `scaseg/data/` -> `scaseg.data`."""
    parts = path.rstrip("/").removesuffix(".py").split("/")
    name = ".".join([FOLDERS[parts[0]], *parts[1:]])
    return name.removesuffix(".__init__")


def _rows() -> list[tuple[list[str], list[str], list[str]]]:
    """(paths, may import, never at import) for each row of docs/layout.md's import table."""
    text = (ROOT / "docs" / "layout.md").read_text()
    table = text.split("| path | holds | may import (scaseg) | never at import |", 1)[1]
    rows = []
    for line in table.splitlines()[2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        paths, may, never = (re.findall(r"`([^`]+)`", c) for c in (cells[0], cells[2], cells[3]))
        rows.append((paths, ["*"] if cells[2] == "everything" else may, never))
    return rows


ROWS = _rows()


def _row_of(module: str) -> tuple[list[str], list[str], list[str]]:
    """The row of ``module`` (a module name): the file itself, else the innermost folder that holds it."""
    best, best_len = None, -1
    for row in ROWS:
        for p in row[0]:
            name = _module_name(p)
            inside = module == name or (p.endswith("/") and module.startswith(name + "."))  # a file: itself only
            if inside and len(name) > best_len:
                best, best_len = row, len(name)
    assert best is not None, f"{module} is in no row of docs/layout.md"
    return best


@functools.lru_cache(maxsize=None)
def _package_modules() -> dict[str, Path]:
    """Module name -> its file in the repository, each file once (os.walk does not descend into the links)."""
    mods = {}
    for folder in FOLDERS:
        for dirpath, dirnames, filenames in os.walk(ROOT / folder):
            dirnames.sort()
            for name in sorted(f for f in filenames if f.endswith(".py")):
                path = Path(dirpath, name)
                mods[_module_name(path.relative_to(ROOT).as_posix())] = path
    return mods


def _scaseg_imports(path: Path) -> set[str]:
    """Every scaseg module that ``path`` imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "scaseg"}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and node.module.split(".")[0] == "scaseg":
            found.add(node.module)
            # `from scaseg.x import y` may name a submodule y: count it as such when it is one.
            found |= {f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in _package_modules()}
    return found


def test_the_map_covers_every_module_and_names_real_paths():
    for paths, may, _ in ROWS:
        for p in paths + [m for m in may if m != "*"]:
            assert (ROOT / p).exists(), f"docs/layout.md names {p}, which is not in the repository"
    for module in _package_modules():
        _row_of(module)


def test_every_scaseg_import_follows_the_map():
    wrong = []
    for module, path in _package_modules().items():
        paths, may, _ = _row_of(module)
        if may == ["*"]:
            continue
        allowed = {_module_name(p) for p in may + paths}  # a row's modules may import each other
        for target in _scaseg_imports(path):
            target_row = _row_of(target)
            if not any(_module_name(p) in allowed for p in target_row[0]):
                wrong.append(f"{path.relative_to(ROOT)} imports {target}")
    assert not wrong, "imports that docs/layout.md does not allow:\n" + "\n".join(wrong)


def test_the_import_rule_check_can_fail():
    # A runtime module that imported the exporter would be reported: the check above is not vacuous.
    _, may, _ = _row_of("scaseg.runtime.bench")
    allowed = {_module_name(p) for p in may}
    assert not any(_module_name(p) in allowed for p in _row_of("scaseg.export.cli")[0])
    assert not any(_module_name(p) in allowed for p in _row_of("scaseg.models.model")[0])


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys, json; print(json.dumps(sorted(sys.modules)))"],
        check=True, capture_output=True, text=True,
    )
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize("row", [r for r in ROWS if r[2]], ids=lambda r: r[0][0])
def test_nothing_forbidden_at_import(row):
    paths, _, never = row
    modules = sorted(m for m in _package_modules() if _row_of(m) is row)
    mods = _modules_after("import importlib\n" + "".join(f"importlib.import_module({m!r})\n" for m in modules))
    assert set(modules) <= mods
    loaded = [n for n in never if n in mods]
    assert not loaded, f"importing {', '.join(paths)} loads {', '.join(loaded)}"


def test_import_scaseg_does_not_import_torch():
    mods = _modules_after("import scaseg")
    assert "torch" not in mods
    assert "onnx" not in mods


def test_the_folder_links_are_the_one_map():
    links = _folder_links()
    # One link per top-level package folder, each relative and to the folder of its own name: the tree moves as one
    # (a clone, a copy, an sdist) and scaseg.<name> is <name>/.
    top = sorted(p.name for p in ROOT.iterdir() if p.is_dir() and p.name != "scaseg" and (p / "__init__.py").is_file())
    assert sorted(links) == top == ["calibration", "export", "runtime"], (links, top)
    for name, target in links.items():
        assert target == Path("..", name), f"scaseg/{name} points to {target}, not ../{name}"
        assert (ROOT / "scaseg" / name).resolve() == (ROOT / name).resolve()
    # docs/layout.md's folder table says the same.
    text = (ROOT / "docs" / "layout.md").read_text()
    table = text.split("| folder | import name | link |", 1)[1].split("\n\n", 1)[0]
    rows = {m.group(1): (m.group(2), m.group(3).strip())
            for m in re.finditer(r"^\| `([^`]+)/` \| `([^`]+)` \|([^|]*)\|$", table, re.M)}
    assert rows == {"scaseg": ("scaseg", ""), **{n: (f"scaseg.{n}", f"`scaseg/{n} -> ../{n}`") for n in links}}, rows
    # Nothing else describes the map: no package-dir or hand-kept package list, no __path__ changed at import.
    setuptools_config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "package-dir" not in setuptools_config, setuptools_config
    assert setuptools_config.get("packages") == {"find": {"include": ["scaseg", "scaseg.*"]}}, setuptools_config
    assert "__path__" not in (ROOT / "scaseg" / "__init__.py").read_text()


def test_git_keeps_the_folder_links_as_links():
    if not (ROOT / ".git").exists() or shutil.which("git") is None:
        pytest.skip("not a git checkout")
    out = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-s", "--", *(f"scaseg/{n}" for n in _folder_links())],
                         capture_output=True, text=True, check=True).stdout.splitlines()
    modes = {line.split("\t")[1]: line.split()[0] for line in out}
    assert modes == {f"scaseg/{n}": "120000" for n in _folder_links()}, f"not committed as symlinks: {modes}"


def test_folders_map_to_import_names():
    import scaseg.calibration
    import scaseg.export
    import scaseg.runtime
    import scaseg.runtime.backends.base

    for mod, folder in ((scaseg.runtime, "runtime"), (scaseg.export, "export"), (scaseg.calibration, "calibration")):
        assert Path(mod.__file__).parent.name == folder
    assert Path(scaseg.runtime.backends.base.__file__).relative_to(Path(scaseg.runtime.__file__).parent).as_posix() \
        == "backends/base.py"


_EDITABLE_PROBE = """
import importlib.abc, importlib.machinery, sys
root, tests = sys.argv[1], sys.argv[2]
class Editable(importlib.abc.MetaPathFinder):  # what setuptools' editable finder does: scaseg -> <root>/scaseg
    def find_spec(self, name, path=None, target=None):
        return importlib.machinery.PathFinder.find_spec(name, [root]) if name == "scaseg" else None
sys.meta_path.append(Editable())  # appended, after the path finder, as the editable install's .pth does
sys.path.insert(0, tests)         # as pytest does for conftest.py and the helpers
import scaseg
print(scaseg.__file__)
"""


def test_an_editable_install_is_not_shadowed_by_a_test_folder():
    # tests/ is on sys.path for the helpers; a folder there named like the package (tests/scaseg/) would be found as
    # a namespace package before an editable install's finder runs, and `pip install -e .; pytest` would fail.
    out = subprocess.run([sys.executable, "-I", "-S", "-B", "-c", _EDITABLE_PROBE, str(ROOT), str(ROOT / "tests")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(ROOT / "scaseg" / "__init__.py")


def test_no_module_is_imported_twice_under_two_names():
    # Every module of the package, imported as a command does, from the repository root with the root on sys.path
    # (where runtime/ is also reachable as a top-level `runtime`): each file is loaded once, under its scaseg name.
    code = ("import importlib, json, os, sys\n"
            + "".join(f"importlib.import_module({m!r})\n" for m in sorted(_package_modules()))
            + "print(json.dumps({n: os.path.realpath(m.__file__) for n, m in list(sys.modules.items())"
              " if getattr(m, '__file__', None)}))")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT, env=env)
    files = json.loads(out.stdout.strip().splitlines()[-1])
    ours = {name: path for name, path in files.items() if Path(path).is_relative_to(ROOT)}
    assert set(_package_modules()) <= set(ours)
    assert not [n for n in ours if n.split(".")[0] in FOLDERS and n.split(".")[0] != "scaseg"], sorted(ours)
    by_file: dict[str, list[str]] = {}
    for name, path in ours.items():
        by_file.setdefault(path, []).append(name)
    assert not {p: n for p, n in by_file.items() if len(n) > 1}, "files loaded under two module names"


def _imports_anywhere(path: Path) -> set[str]:
    """Every module ``path`` may import when it runs (any package), at the top or inside a function; the imports
    under ``if TYPE_CHECKING:`` never run and are left out. ``from a import b`` counts ``a`` and ``a.b``."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return found


def test_the_runtime_imports_nothing_from_export():
    # What runs a deployed model never needs what builds one, even lazily (runtime/ may be installed without it).
    wrong = [f"{path.relative_to(ROOT)} imports {target}" for module, path in _package_modules().items()
             if module.split(".")[:2] == ["scaseg", "runtime"]
             for target in _scaseg_imports(path) if target.split(".")[:2] == ["scaseg", "export"]]
    assert not wrong, "\n".join(wrong)


def test_the_engine_builder_never_imports_torch():
    # A Jetson builds engines from a copied ONNX without PyTorch: export/engine/ and every scaseg module it reaches,
    # inside functions too (docs/layout.md).
    modules = _package_modules()
    todo = [m for m in modules if m.startswith("scaseg.export.engine")]
    assert todo
    seen: set[str] = set()
    torch_users = []
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        imported = _imports_anywhere(modules[module])
        torch_users += [module for name in imported if name.split(".")[0] == "torch"]
        for name in imported:  # a package's __init__ runs first: follow the parents too
            parts = name.split(".")
            todo += [".".join(parts[:i]) for i in range(1, len(parts) + 1) if ".".join(parts[:i]) in modules]
    assert "scaseg.runtime.tensorrt.plugin" in seen  # the walk follows imports made inside functions
    assert not torch_users, f"the engine builder reaches torch through {sorted(set(torch_users))}"


def test_nothing_generic_in_site_packages():
    # What the install puts on sys.path, without a PYTHONPATH that may name a checkout (whose root holds runtime/).
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", "import runtime"], capture_output=True, text=True, cwd="/", env=env)
    assert out.returncode != 0, "a top-level `runtime` package is importable: the namespace mapping leaked"


def test_no_module_is_over_500_lines_and_over_400_only_with_a_reason_in_its_docstring():
    for path in _package_modules().values():
        text = path.read_text()
        lines = len(text.splitlines())
        assert lines <= 500, f"{path.relative_to(ROOT)} has {lines} lines: split it by job"
        if lines > 400:
            doc = ast.get_docstring(ast.parse(text)) or ""
            assert "over 400 lines" in doc.lower(), (f"{path.relative_to(ROOT)} has {lines} lines and its docstring "
                                                     "gives no reason (a line 'Over 400 lines: ...')")


def _functions_over(limit: int, tree: ast.AST) -> list[tuple[str, int]]:
    """(name, lines) of every function or method in ``tree`` longer than ``limit`` lines (decorators aside)."""
    return [(node.name, node.end_lineno - node.lineno + 1) for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno is not None
            and node.end_lineno - node.lineno + 1 > limit]


def test_no_function_is_over_80_lines():
    long = [f"{path.relative_to(ROOT)}:{name} ({lines} lines)" for path in _package_modules().values()
            for name, lines in _functions_over(80, ast.parse(path.read_text()))]
    assert not long, "split into named steps that read top to bottom: " + ", ".join(long)


def test_the_function_length_check_can_fail():
    tree = ast.parse("def short():\n    pass\n\n\nclass A:\n    def long(self):\n" + "        x = 1\n" * 80)
    assert _functions_over(80, tree) == [("long", 81)]
