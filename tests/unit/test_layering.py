"""The architecture's rules, enforced (docs/architecture.md, "Layers").

* Pure code imports no IO, clock, randomness or database: the protocol and domain packages
  (``PURE``) and the pure modules that live inside services (``PURE_MODULES``), which may
  import only other pure code of the project.
* No import cycles anywhere in ``switchboard`` — module-level, function-level and
  type-checking-only imports all count.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "switchboard"
PURE = ["sip", "sdp", "rtp", "esl", "rating"]
# Modules whose presence in a pure core would mean IO, a clock, threads or a database.
FORBIDDEN = {
    "asyncio",
    "socket",
    "ssl",
    "select",
    "selectors",
    "time",
    "threading",
    "multiprocessing",
    "subprocess",
    "uvloop",
    "psycopg",
    "psycopg_pool",
    "pgserver",
    "sqlite3",
    "urllib.request",
    "http",
    "fastapi",
    "uvicorn",
    "random",
}
SERVICES = {"net", "router", "media", "billing", "dialer", "observability", "cli", "config"}
# Pure modules inside service packages: state machines and grammars with time passed in.
PURE_MODULES = [
    "router/proxy.py",
    "router/dispatcher.py",
    "router/protection.py",
    "router/trunks.py",
    "router/stir.py",
    "router/emergency.py",
    "router/overload.py",
    "router/lost_node.py",
    "media/causes.py",
    "media/channel.py",
    "media/dialplan.py",
    "media/digest.py",
    "media/events.py",
    "media/limits.py",
    "media/overload.py",
    "media/rtp_timeout.py",
    "billing/cdr.py",
    "dialer/pacing.py",
]


def imports_of(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def pure_files() -> list[Path]:
    packages = [p for pkg in PURE for p in sorted((SRC / pkg).rglob("*.py"))]
    return packages + [SRC / m for m in PURE_MODULES]


def is_pure_target(module: str) -> bool:
    """Whether ``switchboard.x.y`` names pure code (a pure package or a pure module)."""
    parts = module.split(".")
    if parts[0] != "switchboard" or len(parts) < 2:
        return True
    if parts[1] in PURE:
        return True
    path = "/".join(parts[1:]) + ".py"
    # ``from switchboard.media import causes`` names the package; the test of the
    # imported names is done by resolving them below
    return path in PURE_MODULES


def violations(path: Path) -> list[str]:
    bad = []
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        modules: list[str] = []
        if isinstance(node, ast.Import):
            modules = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            base = node.module
            # "from switchboard.media import causes": each name may be a module
            names = [f"{base}.{a.name}" for a in node.names]
            sub = [n for n in names if (SRC.parent / (n.replace(".", "/") + ".py")).exists()]
            modules = sub or [base]
        for module in modules:
            top = module.split(".")[0]
            if module in FORBIDDEN or top in FORBIDDEN:
                bad.append(f"line {node.lineno}: import {module}")
            elif top == "switchboard" and not is_pure_target(module):
                bad.append(f"line {node.lineno}: pure code imports non-pure {module}")
    return bad


@pytest.mark.parametrize("path", pure_files(), ids=lambda p: str(p.relative_to(SRC)))
def test_pure_code_has_no_io_imports(path: Path) -> None:
    bad = violations(path)
    assert not bad, f"{path.relative_to(SRC)} breaks the pure-code rule:\n" + "\n".join(bad)


def test_rule_catches_a_violation(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text("import asyncio\nfrom time import monotonic\n")
    assert [m for _, m in imports_of(probe)] == ["asyncio", "time"]


def test_rule_catches_a_pure_module_importing_a_service(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import logging\nfrom switchboard.media.core import Switch\n"
        "from switchboard.media import causes\nfrom switchboard.sip import message\n"
    )
    assert violations(probe) == ["line 2: pure code imports non-pure switchboard.media.core"]


def test_every_pure_package_and_module_exists() -> None:
    for pkg in PURE:
        assert (SRC / pkg / "__init__.py").exists(), pkg
    for module in PURE_MODULES:
        assert (SRC / module).exists(), module


# --------------------------------------------------------------------------- cycles


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module → the project modules it imports, by any import statement anywhere in it."""
    files = {module_name(p, root): p for p in root.rglob("*.py")}

    def resolve(name: str) -> str | None:
        while name and name not in files:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for mod, path in files.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        deps: set[str | None] = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                deps |= {resolve(a.name) for a in node.names if a.name.startswith(root.name)}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join([*up, base] if base else up)
                if base.split(".")[0] != root.name:
                    continue
                for alias in node.names:
                    full = f"{base}.{alias.name}"
                    deps.add(full if full in files else resolve(base))
        # a submodule naturally imports its own packages' __init__: not an edge back
        graph[mod] = {d for d in deps if d and d != mod and not mod.startswith(d + ".")}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in graph:
                    continue
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_import_cycles() -> None:
    found = cycles(import_graph(SRC))
    assert not found, "import cycles (break them; a Protocol where only a type is needed):\n" + (
        "\n".join(" <-> ".join(c) for c in found)
    )


def test_cycle_check_sees_function_level_and_type_only_imports(tmp_path: Path) -> None:
    pkg = tmp_path / "switchboard"
    (pkg / "a").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a" / "__init__.py").write_text("")
    (pkg / "a" / "one.py").write_text("def f():\n    from switchboard.a import two\n")
    (pkg / "a" / "two.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .one import f\n"
    )
    (pkg / "a" / "three.py").write_text("from switchboard.a import one\n")
    assert cycles(import_graph(pkg)) == [["switchboard.a.one", "switchboard.a.two"]]
