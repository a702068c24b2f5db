"""Compile tether's hot modules with mypyc, in place, beside their sources.

    .venv/bin/python scripts/compile.py            # build (or rebuild) the compiled modules
    .venv/bin/python scripts/compile.py --clean    # remove them: tether runs as pure Python
    python3 scripts/compile.py --sources           # the compiled sources, for the Makefile

The step loop, the journal's event code, the policy pipeline and the redactor are compiled to C
extension modules by mypyc (part of mypy, in the ``dev`` extra), which runs the same typed code
with about a fifth fewer instructions a run. ``make setup`` runs this script; it needs a C
compiler. Set ``TETHER_PURE_PYTHON=1`` to skip it (and, at run time, to ignore a build).

A build is used only while its sources are unchanged: ``src/tether/_compiled.json`` records the
SHA-256 of each compiled source, and :mod:`tether.native` checks it when tether is imported, so
an edited source is never shadowed by an older compiled module.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sysconfig
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
MANIFEST = SRC / "tether" / "_compiled.json"

MODULES = [
    "tether.messages",
    "tether.tools",
    "tether.journal.events",
    "tether.engine.state",
    "tether.engine.context",
    "tether.engine.loop",
    "tether.engine.budget",
    "tether.engine.runtime",
    "tether.policy.pipeline",
    "tether.policy.rules",
    "tether.telemetry.redaction",
]
"""The modules compiled: tether's own code that every step runs through. The rest stays Python,
models included (the scripted one too: a real model's client code is not compiled either)."""


def source_of(module: str) -> Path:
    return SRC.joinpath(*module.split(".")).with_suffix(".py")


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def artifacts() -> list[Path]:
    """Every file a build leaves in the source tree."""
    found = [p for p in SRC.glob("*__mypyc*.so") if p.is_file()]
    # every extension module beside a source, not only those listed now (an older build may
    # have compiled others)
    for ext in (SRC / "tether").rglob("*.so"):
        if ext.with_name(ext.name.split(".")[0] + ".py").exists():
            found.append(ext)
    if MANIFEST.exists():
        found.append(MANIFEST)
    return found


def clean() -> None:
    for path in artifacts():
        path.unlink()


def build() -> None:
    try:
        from mypyc.build import mypycify
        from setuptools import Distribution
    except ImportError as exc:
        raise SystemExit(
            f"compiling needs mypy (the 'dev' extra) and setuptools: {exc}. "
            "Set TETHER_PURE_PYTHON=1 to run tether as pure Python instead."
        ) from exc
    clean()
    paths = [str(source_of(m).relative_to(SRC)) for m in MODULES]
    with tempfile.TemporaryDirectory() as tmp:
        here = os.getcwd()
        os.chdir(SRC)  # mypyc names the modules by their path from here
        try:
            # mypy's defaults, not the project's type-checking settings: its pydantic plugin
            # describes classes in ways compiled code must not rely on
            config = Path(tmp) / "mypy.ini"
            config.write_text("[mypy]\n")
            options = ["--config-file", str(config)]
            extensions = mypycify([*options, *paths], target_dir=str(Path(tmp) / "c"))
            dist = Distribution({"name": "tether-compiled", "ext_modules": extensions})
            dist.script_args = [
                "-q",
                "build_ext",
                "--inplace",
                "--build-temp",
                str(Path(tmp) / "o"),
            ]
            dist.parse_command_line()
            dist.run_commands()
        except BaseException as exc:
            clean()
            raise SystemExit(
                f"compiling tether's modules failed ({type(exc).__name__}: {exc}); it needs a "
                "C compiler. Set TETHER_PURE_PYTHON=1 to run tether as pure Python instead."
            ) from exc
        finally:
            os.chdir(here)
    manifest = {"modules": {m: digest(source_of(m)) for m in MODULES}}
    MANIFEST.write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"compiled {len(MODULES)} modules with mypyc ({MANIFEST.relative_to(ROOT)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clean", action="store_true", help="remove the compiled modules")
    parser.add_argument("--sources", action="store_true", help="print the compiled sources")
    args = parser.parse_args()
    if args.sources:
        print(" ".join(str(source_of(m).relative_to(ROOT)) for m in MODULES))
    elif args.clean:
        clean()
    elif os.environ.get("TETHER_PURE_PYTHON"):
        clean()
        print("TETHER_PURE_PYTHON is set: tether runs as pure Python (nothing compiled)")
    else:
        compiler = (os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc").split()[0]
        if shutil.which(compiler) is None:
            raise SystemExit(
                "compiling tether's modules needs a C compiler (none found). "
                "Set TETHER_PURE_PYTHON=1 to run tether as pure Python instead."
            )
        build()


if __name__ == "__main__":
    main()
