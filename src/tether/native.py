"""Compiled modules: tether's hot path as C extensions (mypyc), used only when up to date.

``make setup`` compiles the modules every step runs through (the step loop, the run state, the
journal's events, the policy pipeline, the redactor...) with mypyc, beside their sources (see
``scripts/compile.py``). Python would import such an extension module in preference to its
source, so an edited source could be shadowed by an older build. To prevent that, the build
records each source's SHA-256 in ``_compiled.json``, and :func:`install` (run when ``tether`` is
imported, before any compiled module) compares them: if any source changed, or
``TETHER_PURE_PYTHON`` is set, every compiled module is imported from its source instead. All
or none: compiled modules call each other directly, so a mix of old and new code could run.

:func:`status` says which it is. Importing this module decides it (``tether`` imports it first).
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

_PACKAGE = Path(__file__).resolve().parent
MANIFEST = _PACKAGE / "_compiled.json"

_reason: str = ""  # why the compiled modules are not used ("" when they are, or none exist)
_modules: tuple[str, ...] = ()  # the modules the manifest lists


def _source(module: str) -> Path:
    parts = module.split(".")
    return _PACKAGE.parent.joinpath(*parts).with_suffix(".py")


def changed_sources(modules: dict[str, str]) -> list[str]:
    """The modules of a manifest (module → SHA-256 of its source when compiled) whose source is
    not what was compiled (edited, or missing)."""
    changed = []
    for module, digest in modules.items():
        try:
            now = hashlib.sha256(_source(module).read_bytes()).hexdigest()
        except OSError:
            now = ""
        if now != digest:
            changed.append(module)
    return changed


class _FromSource:
    """Imports the given modules from their ``.py`` source, past any compiled build (a finder
    for ``sys.meta_path``; ``importlib.abc`` is not imported for it, which costs tens of ms)."""

    def __init__(self, modules: Sequence[str]) -> None:
        self.modules = frozenset(modules)

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in self.modules:
            return None
        return importlib.util.spec_from_file_location(fullname, _source(fullname))


def install() -> None:
    """Decide whether the compiled modules are used (see the module's docstring). Runs once,
    when this module is imported: ``tether`` imports it before any compiled module."""
    global _reason, _modules
    try:
        manifest = json.loads(MANIFEST.read_text())
        _modules = tuple(dict(manifest["modules"]))
    except FileNotFoundError:
        if not any(_PACKAGE.parent.glob("*__mypyc*")):
            return  # nothing was compiled
        # a build without its manifest (interrupted, or the manifest removed): unverifiable
        _reason = f"a build without its manifest {MANIFEST.name}"
    except (OSError, ValueError, KeyError, TypeError) as exc:
        _reason = f"its manifest {MANIFEST.name} is unreadable ({exc})"
    else:
        if os.environ.get("TETHER_PURE_PYTHON"):
            _reason = "TETHER_PURE_PYTHON is set"
        elif changed := changed_sources(manifest["modules"]):
            _reason = f"{changed[0].replace('.', '/')}.py changed since it was compiled"
    if _reason:
        sys.meta_path.insert(0, _FromSource(_modules or _compiled_beside_sources()))


def _compiled_beside_sources() -> list[str]:
    """Modules with a compiled build beside their source (for a broken manifest)."""
    found = []
    for ext in _PACKAGE.rglob("*.so"):
        relative = ext.relative_to(_PACKAGE.parent).parts
        module = ".".join([*relative[:-1], ext.name.split(".")[0]])
        if _source(module).exists():
            found.append(module)
    return found


def _is_compiled(module: ModuleType) -> bool:
    origin = getattr(module, "__file__", None) or ""
    return origin.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))


def compiled_modules() -> list[str]:
    """The listed modules imported so far that run compiled."""
    return [m for m in _modules if m in sys.modules and _is_compiled(sys.modules[m])]


def status() -> str:
    """One line: whether tether's hot path runs compiled, and if not, why (imports the
    compiled modules to find out)."""
    if _reason:
        return f"pure Python ({_reason})"
    if not _modules:
        return "pure Python (nothing compiled: `make setup` compiles the hot path)"
    for module in _modules:
        importlib.import_module(module)
    compiled = compiled_modules()
    if len(compiled) < len(_modules):
        missing = next(m for m in _modules if m not in compiled)
        return (
            f"partly compiled ({len(compiled)} of {len(_modules)} modules; no build of {missing})"
        )
    return f"compiled with mypyc ({len(compiled)} modules)"


install()
