"""The compiled hot path (tether.native): used only when built from the sources beside it."""

from __future__ import annotations

import hashlib
import importlib.machinery
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import tether
from tether import Agent, ScriptedModel, native
from tether.engine import Runtime
from tether.journal import Store

SRC = Path(tether.__file__).resolve().parent.parent


def _probe(env_extra: dict[str, str], pythonpath: Path = SRC) -> dict[str, object]:
    """Import tether in a fresh interpreter; report where the hot path came from."""
    code = (
        "import json, tether.engine.loop as loop, tether.engine.state as state\n"
        "from tether import native\n"
        "print(json.dumps({'loop': loop.__file__, 'state': state.__file__,"
        " 'status': native.status(), 'compiled': native.compiled_modules()}))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TETHER_PURE_PYTHON"}
    env.update(env_extra)
    env["PYTHONPATH"] = str(pythonpath)
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    result: dict[str, object] = json.loads(out.stdout)
    return result


def _manifest() -> dict[str, str] | None:
    if not native.MANIFEST.exists():
        return None
    modules: dict[str, str] = json.loads(native.MANIFEST.read_text())["modules"]
    return modules


def test_a_build_of_the_current_sources_is_used_and_reported() -> None:
    probe = _probe({})
    modules = _manifest()
    if modules is None:  # never compiled here (TETHER_PURE_PYTHON at setup): pure Python
        assert str(probe["loop"]).endswith(".py")
        assert str(probe["status"]).startswith("pure Python (nothing compiled")
    else:
        assert native.changed_sources(modules) == []
        assert probe["compiled"] == list(modules)
        assert not str(probe["loop"]).endswith(".py")
        assert probe["status"] == f"compiled with mypyc ({len(modules)} modules)"


def test_tether_pure_python_imports_every_module_from_its_source() -> None:
    probe = _probe({"TETHER_PURE_PYTHON": "1"})
    assert str(probe["loop"]).endswith(".py") and str(probe["state"]).endswith(".py")
    assert probe["compiled"] == []
    if _manifest() is not None:
        assert probe["status"] == "pure Python (TETHER_PURE_PYTHON is set)"


def test_an_edited_source_is_never_shadowed_by_an_older_build(tmp_path: Path) -> None:
    # a copy of the package and of any build beside it, with one compiled source edited
    copy = tmp_path / "src"
    shutil.copytree(SRC / "tether", copy / "tether", ignore=shutil.ignore_patterns("__pycache__"))
    for lib in SRC.glob("*__mypyc*.so"):
        shutil.copy2(lib, copy / lib.name)
    modules = _manifest() or {
        m: hashlib.sha256((SRC / (m.replace(".", "/") + ".py")).read_bytes()).hexdigest()
        for m in ("tether.engine.loop", "tether.engine.state")
    }
    (copy / "tether" / "_compiled.json").write_text(json.dumps({"modules": modules}))
    loop = copy / "tether" / "engine" / "loop.py"
    loop.write_text(loop.read_text() + "\nEDITED = True\n")

    probe = _probe({}, pythonpath=copy)
    assert probe["status"] == "pure Python (tether/engine/loop.py changed since it was compiled)"
    # all or none: the unchanged modules come from source too
    assert probe["loop"] == str(loop)
    assert probe["state"] == str(copy / "tether" / "engine" / "state.py")
    assert probe["compiled"] == []


def test_changed_sources_names_edited_and_missing_modules() -> None:
    source = SRC / "tether" / "engine" / "loop.py"
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    assert native.changed_sources({"tether.engine.loop": digest}) == []
    assert native.changed_sources({"tether.engine.loop": "0" * 64}) == ["tether.engine.loop"]
    assert native.changed_sources({"tether.engine.gone": digest}) == ["tether.engine.gone"]


class _CountingModel(ScriptedModel):
    """A subclass written in Python of a class that may be compiled."""

    calls = 0

    async def request(self, request):  # type: ignore[no-untyped-def]
        type(self).calls += 1
        return await super().request(request)


class _NamedRuntime(Runtime):
    label = "subclassed"


async def test_public_classes_stay_open_to_python_subclasses(tmp_path: Path) -> None:
    agent = Agent(name="sub", instructions="x", model=_CountingModel(["done"]))
    result = await _NamedRuntime(Store(str(tmp_path / "t.db"))).run(agent, "go")
    assert result.ok and result.output == "done"
    assert _CountingModel.calls == 1


def test_a_build_without_its_manifest_is_not_trusted(tmp_path: Path) -> None:
    # a copy of the package with what an interrupted build could leave: a shared library and a
    # module's extension (empty files here: importing either would fail), and no manifest
    copy = tmp_path / "src"
    shutil.copytree(
        SRC / "tether",
        copy / "tether",
        ignore=shutil.ignore_patterns("__pycache__", "*.so", "_compiled.json"),
    )
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    (copy / f"0123abcd__mypyc{suffix}").write_bytes(b"")
    (copy / "tether" / "engine" / f"loop{suffix}").write_bytes(b"")

    probe = _probe({}, pythonpath=copy)
    assert probe["status"] == "pure Python (a build without its manifest _compiled.json)"
    assert probe["loop"] == str(copy / "tether" / "engine" / "loop.py")
