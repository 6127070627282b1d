"""The hot paths compiled to C with mypyc, loaded only while they match the source.

The modules in :data:`MODULES` — the SIP fast path and the router's proxy core with the
pure modules it calls on every message, and the RTP helpers a media node calls for every
packet (the header writer, the RFC 3550 receive statistics) — are plain, fully typed
Python. ``make native``
(part of ``make run`` and ``make test``) compiles them with mypyc, the compiler that
ships with mypy, into ``_native_build/`` next to this file (not in version control).
Nothing else changes: the same source is the documentation, the test subject and the
fallback.

Loading is guarded so a compiled module can never stand in for source it was not built
from. The build records the SHA-256 of every project file the compiled modules read
(the modules and the ``switchboard`` modules they import, transitively: mypyc inlines
constants and binds calls across them). :func:`install` — run when the ``switchboard``
package is imported — checks those hashes and the interpreter tag; if anything differs
(a file edited since the build, another Python), every module is imported from source,
as a whole, and :data:`STATUS` says why. ``SWITCHBOARD_NATIVE=0`` turns the compiled
modules off (the benchmark uses it to compare both in one run).

``make native`` calls :func:`main` with ``build`` (a no-op while the build is current);
``status`` prints which implementation is active.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

# Compiled as one group: the SIP fast path and the proxy core with its pure helpers; the
# RTP packet writer and receive statistics (per packet on a media node: bench/media).
MODULES = (
    "switchboard.sip.fastpath",
    "switchboard.router.proxy",
    "switchboard.router.dispatcher",
    "switchboard.router.protection",
    "switchboard.router.trunks",
    "switchboard.rtp.packet",
    "switchboard.rtp.stats",
)
PACKAGE_DIR = Path(__file__).resolve().parent
BUILD_DIR = PACKAGE_DIR / "_native_build"
MANIFEST = BUILD_DIR / "manifest.json"

# What install() decided, for logs and `status`: "compiled (...)" or "pure Python (...)".
STATUS = "pure Python (not installed)"


def _source(module: str) -> Path:
    """The source file of a ``switchboard`` module (a package's ``__init__.py``)."""
    rel = Path(*module.split(".")[1:])
    path = PACKAGE_DIR / rel.with_suffix(".py")
    return path if path.exists() else PACKAGE_DIR / rel / "__init__.py"


def _imports(module: str) -> set[str]:
    """The ``switchboard`` modules ``module`` imports (any level of the file)."""
    tree = ast.parse(_source(module).read_bytes())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("switchboard."))
        elif (
            isinstance(node, ast.ImportFrom)
            and node.level == 0
            and (node.module or "").startswith("switchboard.")
        ):
            assert node.module is not None
            found.add(node.module)
            # ``from switchboard.sip import fastpath`` names a module, not a symbol
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                if _source(sub).exists():
                    found.add(sub)
    return {m for m in found if _source(m).exists()}


def dependencies(modules: Sequence[str] = MODULES) -> list[str]:
    """The compiled modules and every ``switchboard`` module they read, transitively."""
    seen: set[str] = set()
    todo = list(modules)
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        todo.extend(_imports(m) - seen)
    return sorted(seen)


def _digest(module: str) -> str:
    return hashlib.sha256(_source(module).read_bytes()).hexdigest()


def _tag() -> str:
    """The interpreter an extension module must match (e.g. ``cpython-311-x86_64-...``)."""
    return str(sysconfig.get_config_var("EXT_SUFFIX"))


def _check(manifest: dict[str, object]) -> str | None:
    """Why the build in ``manifest`` cannot be used, or None when it can."""
    if manifest.get("ext_suffix") != _tag():
        return "built for another Python"
    if manifest.get("modules") != list(MODULES):
        return "built for another module list"
    hashes = manifest.get("sources")
    if not isinstance(hashes, dict) or set(hashes) != set(dependencies()):
        return "sources changed since the build (run `make native`)"
    for module, digest in hashes.items():
        if _digest(module) != digest:
            return f"{_source(module).relative_to(PACKAGE_DIR.parent)} changed since the build (run `make native`)"
    return None


def _read_manifest() -> dict[str, object] | None:
    try:
        data = json.loads(MANIFEST.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class _Finder(importlib.abc.MetaPathFinder):
    """Serves the compiled modules (and mypyc's shared runtime library) from BUILD_DIR."""

    def __init__(self, files: dict[str, str]) -> None:
        self.files = files

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        name = self.files.get(fullname)
        if name is None:
            return None
        loader = importlib.machinery.ExtensionFileLoader(fullname, str(BUILD_DIR / name))
        return importlib.util.spec_from_file_location(fullname, BUILD_DIR / name, loader=loader)


def install() -> str:
    """Put the compiled modules in front of their sources when the build is current.

    Called once by ``switchboard/__init__.py``, before any compiled module is imported.
    Never raises: any doubt means source.
    """
    global STATUS
    if any(isinstance(f, _Finder) for f in sys.meta_path):
        return STATUS
    if os.environ.get("SWITCHBOARD_NATIVE", "1") == "0":
        STATUS = "pure Python (SWITCHBOARD_NATIVE=0)"
        return STATUS
    manifest = _read_manifest()
    if manifest is None:
        STATUS = "pure Python (no compiled build: run `make native`)"
        return STATUS
    try:
        why = _check(manifest)
    except OSError as exc:
        why = f"cannot read the sources: {exc}"
    files = manifest.get("files")
    if why is None and not (
        isinstance(files, dict) and all((BUILD_DIR / str(f)).exists() for f in files.values())
    ):
        why = "compiled files missing (run `make native`)"
    if why is not None:
        STATUS = f"pure Python ({why})"
        return STATUS
    assert isinstance(files, dict)
    sys.meta_path.insert(0, _Finder({str(k): str(v) for k, v in files.items()}))
    STATUS = f"compiled with mypyc ({len(MODULES)} modules)"
    return STATUS


def build(*, force: bool = False) -> int:
    """Compile :data:`MODULES` into BUILD_DIR; 0 also when the compiler is missing (the
    source still runs), 1 when compilation failed."""
    manifest = _read_manifest()
    if not force and manifest is not None and _check(manifest) is None:
        print("native: compiled hot path is current")
        return 0
    try:
        import mypyc  # noqa: F401  (ships with mypy, a development dependency)
    except ImportError:
        print("native: mypyc is not installed; the router runs its pure Python hot path")
        return 0
    sources = dependencies()
    # Hashed before the copy the compiler reads: a file edited during the (minutes long)
    # build must not be recorded as the source of a module compiled from its old text.
    digests = {m: _digest(m) for m in sources}
    with tempfile.TemporaryDirectory(prefix="switchboard-native-") as tmp:
        work = Path(tmp)
        shutil.copytree(
            PACKAGE_DIR,
            work / "switchboard",
            ignore=shutil.ignore_patterns("_native_build", "__pycache__", "*.so"),
        )
        paths = [str(Path(*m.split(".")).with_suffix(".py")) for m in MODULES]
        env = dict(os.environ, MYPYC_OPT_LEVEL="3")
        proc = subprocess.run(
            [sys.executable, "-m", "mypyc", *paths],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
            print("native: compilation failed; the router runs its pure Python hot path")
            shutil.rmtree(BUILD_DIR, ignore_errors=True)
            return 1
        shutil.rmtree(BUILD_DIR, ignore_errors=True)
        BUILD_DIR.mkdir()
        files: dict[str, str] = {}
        suffix = _tag()
        for so in work.rglob(f"*{suffix}"):
            rel = so.relative_to(work)
            if rel.parts[0] == "build":
                continue  # setuptools' intermediate copies
            name = ".".join(rel.with_name(so.name[: -len(suffix)]).parts)
            # mypyc's shared runtime library keeps its own (top-level) name
            target = so.name if len(rel.parts) == 1 else f"{name}{suffix}"
            shutil.copy2(so, BUILD_DIR / target)
            files[name] = target
    missing = set(MODULES) - set(files)
    if missing:
        print(f"native: the build produced no module for {', '.join(sorted(missing))}")
        shutil.rmtree(BUILD_DIR, ignore_errors=True)
        return 1
    MANIFEST.write_text(
        json.dumps(
            {
                "ext_suffix": _tag(),
                "modules": list(MODULES),
                "files": files,
                "sources": digests,
            },
            indent=1,
        )
        + "\n"
    )
    print(f"native: compiled {len(MODULES)} modules with mypyc into {BUILD_DIR}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["build"]:
        return build(force="--force" in args)
    if args[:1] == ["status"]:
        print(STATUS)
        return 0
    print("usage: make native | switchboard._native.main(['build' [--force] | 'status'])")
    return 2
