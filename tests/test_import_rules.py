"""The import rules of ARCHITECTURE.md, read from the source with ``ast``.

- ``fleet/`` (the kernel) imports no service and not ``sim/``;
- a service never imports another service, except the libraries: any service may import
  ``cache/``, and the bidder may import ``pacing.gate``;
- ``sim/`` imports nothing of ours but ``fleet/`` (it talks to the fleet over HTTP);
- no import cycle between the modules of one package.

Every import counts: at module level, inside functions, under ``if TYPE_CHECKING:``, and in
Cython sources (``.pyx``/``.pxd``, read line by line: ``import``, ``from ... (c)import``).
``bench/`` and ``tests/`` may import anything and are not read. The checker runs over the
repository and, to show that it fails when it should, over small synthetic trees that break
each rule.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
KERNEL = "fleet"
SIMULATOR = "sim"
SERVICES = frozenset({"bidder", "cache", "pacing", "bidlogger", "tracker", "learner"})
PACKAGES = frozenset({KERNEL, SIMULATOR, *SERVICES})
# Libraries a service may import although they live in another service's package: the module
# and everything under it.
LIBRARIES: dict[str, frozenset[str]] = {
    "cache": SERVICES,  # any service may use the cache tiers
    "pacing.gate": frozenset({"bidder"}),  # the bidder's spend gate, a pure library
}
# Known violations, let through as exact (importer, imported) pairs: none. An entry that matches
# no import any more fails the test, so the list cannot go stale.
KNOWN: frozenset[tuple[str, str]] = frozenset()


@dataclass(frozen=True, slots=True)
class Import:
    importer: str  # dotted module name
    imported: str  # dotted module name, resolved to a submodule where there is one
    line: int


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_module(root: Path, dotted: str) -> bool:
    base = root.joinpath(*dotted.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def _resolve_from(node: ast.ImportFrom, importer: str, is_package: bool) -> str:
    if node.level == 0:
        return node.module or ""
    parts = importer.split(".")
    if not is_package:
        parts = parts[:-1]
    if node.level > 1:
        parts = parts[: len(parts) - (node.level - 1)]
    return ".".join([*parts, node.module] if node.module else parts)


_CYTHON_FROM = re.compile(r"^\s*from\s+(\.*[\w.]*)\s+c?import\s+\(?\s*([\w\s,]+)")
_CYTHON_IMPORT = re.compile(
    r"^\s*c?import\s+([\w.]+(?:\s+as\s+\w+)?(?:\s*,\s*[\w.]+(?:\s+as\s+\w+)?)*)"
)


def _cython_imports(path: Path) -> Iterator[tuple[int, str, list[str], int]]:
    """(line, module, names, level) of each import statement in a Cython source."""
    lines = path.read_text(encoding="utf-8").splitlines()
    for lineno, line in enumerate(lines, 1):
        if re.match(r"^\s*from\s+\S+\s+c?import\s+\(\s*$", line):
            # A parenthesised import over several lines: join it up to its ")".
            end = next((i for i in range(lineno, len(lines)) if ")" in lines[i]), len(lines) - 1)
            line = line + " " + " ".join(lines[lineno : end + 1]).replace(")", " ")
        m = _CYTHON_FROM.match(line)
        if m is not None:
            dots = len(m.group(1)) - len(m.group(1).lstrip("."))
            names = [n.split()[0] for n in m.group(2).split(",") if n.strip()]
            yield lineno, m.group(1).lstrip("."), names, dots
            continue
        m = _CYTHON_IMPORT.match(line)
        if m is not None:
            for part in m.group(1).split(","):
                yield lineno, part.split()[0], [], 0


def imports_of(root: Path, path: Path) -> Iterator[Import]:
    """Every import in one file, wherever it stands; ``from a import b`` names ``a.b`` when
    that is a module, else ``a``."""
    importer = module_name(root, path)
    if path.suffix in (".pyx", ".pxd"):
        for lineno, module, names, level in _cython_imports(path):
            statement = ast.ImportFrom(module=module or None, names=[], level=level)
            base = _resolve_from(statement, importer, is_package=False) if names else module
            for name in names or [""]:
                sub = f"{base}.{name}" if name else base
                target = sub if name and _is_module(root, sub) else base
                yield Import(importer, target, lineno)
        return
    tree = ast.parse(path.read_bytes(), filename=str(path))
    is_package = path.name == "__init__.py"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(importer, alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve_from(node, importer, is_package)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                target = sub if alias.name != "*" and _is_module(root, sub) else base
                yield Import(importer, target, node.lineno)


def all_imports(root: Path) -> list[Import]:
    out: list[Import] = []
    for package in sorted(PACKAGES):
        directory = root / package
        if not directory.is_dir():
            continue
        for pattern in ("*.py", "*.pyx", "*.pxd"):
            for path in sorted(directory.rglob(pattern)):
                out.extend(imports_of(root, path))
    return out


def _top(module: str) -> str:
    return module.split(".", 1)[0]


def _under(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def rule_broken(imp: Import) -> str | None:
    """Which layering rule one import breaks, or None."""
    src, dst = _top(imp.importer), _top(imp.imported)
    if dst not in PACKAGES or src == dst:
        return None
    if src == KERNEL:
        return f"the kernel imports {'the simulator' if dst == SIMULATOR else 'a service'}"
    if src == SIMULATOR:
        return None if dst == KERNEL else "the simulator imports more than the kernel"
    if src in SERVICES and dst != KERNEL:
        for library, users in LIBRARIES.items():
            if _under(imp.imported, library) and src in users:
                return None
        if dst == SIMULATOR:
            return "a service imports the simulator"
        return "a service imports another service"
    return None


def cycles(imports: Iterable[Import]) -> list[list[str]]:
    """Import cycles among the modules of one package (strongly connected components of more
    than one module), each sorted, in a stable order."""
    graph: dict[str, set[str]] = {}
    for imp in imports:
        if _top(imp.importer) == _top(imp.imported) and imp.importer != imp.imported:
            graph.setdefault(imp.importer, set()).add(imp.imported)
            graph.setdefault(imp.imported, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan; packages are small, recursion is fine
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def violations(root: Path, known: frozenset[tuple[str, str]] = frozenset()) -> list[str]:
    """Every broken rule under ``root``, one line each; ``known`` pairs are let through, and
    one that matches no import is reported as stale."""
    imports = all_imports(root)
    out = []
    used: set[tuple[str, str]] = set()
    for imp in imports:
        reason = rule_broken(imp)
        if reason is None:
            continue
        pair = (imp.importer, imp.imported)
        if pair in known:
            used.add(pair)
            continue
        out.append(f"{imp.importer}:{imp.line} imports {imp.imported}: {reason}")
    for stale in sorted(known - used):
        out.append(f"allow-list entry {stale} matches no import any more: delete it")
    for cycle in cycles(imports):
        out.append(f"import cycle inside {_top(cycle[0])}/: {' <-> '.join(cycle)}")
    return out


# -- the repository -----------------------------------------------------------------------------


def test_the_repository_keeps_the_import_rules() -> None:
    problems = violations(REPO, KNOWN)
    assert not problems, "\n".join(problems)


def test_every_package_is_read() -> None:
    """The checker sees the packages there are, imports inside functions included."""
    imports = all_imports(REPO)
    importers = {_top(i.importer) for i in imports}
    present = {p for p in PACKAGES if (REPO / p / "__init__.py").is_file()}
    assert present <= importers
    assert {"fleet", "bidder", "cache", "sim"} <= present


# -- the checker on synthetic trees -------------------------------------------------------------


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name in ("fleet", "bidder", "cache", "pacing", "tracker", "sim"):
        (root / name).mkdir(exist_ok=True)
        (root / name / "__init__.py").write_text("")
    (root / "pacing" / "gate.py").write_text("")
    (root / "pacing" / "plan.py").write_text("")
    (root / "cache" / "region.py").write_text("")
    (root / "fleet" / "settings.py").write_text("")
    for rel, text in files.items():
        (root / rel).write_text(text)
    return root


LEGAL = {
    "bidder/a.py": (
        "import fleet.settings\n"
        "from cache import region\n"
        "from pacing.gate import Gate\n"
        "from . import b\n"
        "import json\n"
    ),
    "bidder/b.py": "from fleet import settings\n",
    "tracker/x.py": "from cache.region import Region\nimport fleet\n",
    "sim/s.py": "from fleet.settings import load\nimport msgspec\n",
    "fleet/k.py": "from fleet import settings\n",
}


def test_a_legal_tree_passes(tmp_path: Path) -> None:
    assert violations(_tree(tmp_path, LEGAL)) == []


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"fleet/k.py": "import bidder.a\n"}, "the kernel imports a service"),
        ({"fleet/k.py": "from sim import s\n"}, "the kernel imports the simulator"),
        (  # inside a function, where a lazy import hides
            {"fleet/k.py": "def f():\n    from cache import region\n    return region\n"},
            "the kernel imports a service",
        ),
        (  # under TYPE_CHECKING
            {
                "fleet/k.py": (
                    "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                    "    from tracker.x import T\n"
                )
            },
            "the kernel imports a service",
        ),
        ({"tracker/x.py": "from bidder import a\n"}, "a service imports another service"),
        (  # a Cython source
            {"fleet/_k.pyx": "from libc.math cimport exp\nfrom bidder.a import x\n"},
            "the kernel imports a service",
        ),
        ({"sim/_s.pyx": "cimport numpy as cnp\nimport cache.region\n"}, "the simulator imports"),
        (  # a Cython import in parentheses over several lines
            {"fleet/_k.pyx": "from bidder.a import (\n    x,\n    y,\n)\n"},
            "the kernel imports a service",
        ),
        ({"tracker/x.py": "import pacing.gate\n"}, "a service imports another service"),
        ({"bidder/a.py": "from pacing import plan\n"}, "a service imports another service"),
        ({"bidder/a.py": "import pacing\n"}, "a service imports another service"),
        ({"cache/c.py": "from bidder.a import x\n"}, "a service imports another service"),
        ({"bidder/a.py": "import sim.s\n"}, "a service imports the simulator"),
        ({"sim/s.py": "from bidder.a import x\n"}, "the simulator imports more than the kernel"),
        ({"sim/s.py": "import cache\n"}, "the simulator imports more than the kernel"),
        (
            {"bidder/a.py": "from bidder import b\n", "bidder/b.py": "import bidder.a\n"},
            "import cycle inside bidder/: bidder.a <-> bidder.b",
        ),
        (  # relative imports, one inside a function
            {
                "bidder/a.py": "from .b import y\n",
                "bidder/b.py": "def f():\n    from . import c\n",
                "bidder/c.py": "from .a import z\n",
            },
            "import cycle inside bidder/: bidder.a <-> bidder.b <-> bidder.c",
        ),
        (  # through the package's __init__
            {
                "bidder/__init__.py": "from bidder.a import x\n",
                "bidder/a.py": "from bidder import q\n",
            },
            "import cycle inside bidder/: bidder <-> bidder.a",
        ),
    ],
)
def test_each_broken_rule_is_reported(tmp_path: Path, files: dict[str, str], expected: str) -> None:
    found = violations(_tree(tmp_path, {**LEGAL, **files}))
    assert any(expected in line for line in found), found


def test_known_violations_pass_and_stale_ones_fail(tmp_path: Path) -> None:
    root = _tree(tmp_path, {**LEGAL, "fleet/k.py": "import bidder.a\n"})
    assert violations(root, frozenset({("fleet.k", "bidder.a")})) == []
    stale = violations(root, frozenset({("fleet.k", "bidder.a"), ("fleet.k", "cache.region")}))
    assert stale == [
        "allow-list entry ('fleet.k', 'cache.region') matches no import any more: delete it"
    ]
