"""The training and benchmark scripts as a package: importable as `training.*` / `benchmarks.*`, no path
patching, no machine's absolute paths in committed files, and one list of training dependencies."""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT

TEXT_SUFFIXES = {".py", ".txt", ".md", ".json", ".yaml", ".yml", ".cfg", ".toml", ".sh", ".service"}
TRAINING_MODULES = sorted(p.stem for p in (ROOT / "training").glob("*.py") if p.stem != "__init__")


def project_files():
    """The files of the project: git's list in a checkout (a `.venv` made by the README's first command, build/
    and caches are not the project's), else every file but those folders (an unpacked sdist)."""
    if (ROOT / ".git").exists():
        listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                                capture_output=True, check=True).stdout.decode().split("\0")
        return [ROOT / name for name in listed if name and (ROOT / name).is_file()]
    skip = {".git", ".hypothesis", "__pycache__", ".pytest_cache", ".venv", "venv", "build", "dist", ".cache"}
    return [p for p in ROOT.rglob("*") if p.is_file() and not skip & set(p.relative_to(ROOT).parts)]


def committed_text_files():
    return [p for p in project_files() if p.suffix in TEXT_SUFFIXES or p.name == "Makefile"]


def requirement_lines(text: str) -> list[str]:
    return [line.split("#")[0].strip() for line in text.splitlines() if line.split("#")[0].strip()]


def test_training_requirements_equal_the_training_extra():
    tree = ast.parse((ROOT / "setup.py").read_text())
    extras = next(ast.literal_eval(k.value) for node in ast.walk(tree) if isinstance(node, ast.Call)
                  for k in node.keywords if k.arg == "extras_require")
    listed = requirement_lines((ROOT / "training" / "requirements.txt").read_text())
    assert sorted(listed) == sorted(extras["training"])


@pytest.mark.parametrize("module", TRAINING_MODULES)
def test_every_training_script_imports_as_a_module(module):
    imported = importlib.import_module(f"training.{module}")
    assert (imported.__doc__ or "").strip(), f"training/{module}.py opens without saying what it owns"


def test_no_script_patches_sys_path():
    offenders = [str(p.relative_to(ROOT)) for p in project_files()
                 if p.suffix == ".py" and p.name != "test_training_package.py"
                 and "sys.path" + ".insert" in p.read_text(errors="replace")]
    assert offenders == []


def test_no_absolute_path_of_this_machine_in_committed_files():
    # The folder holding the checkout and ../shared is this machine's; nothing committed may name it.
    if len(ROOT.parent.parts) < 2:
        pytest.skip("checkout directly under / : its parent cannot be told apart from other absolute paths")
    # Under a folder every machine has (/tmp, /home, ...) its name is no sign of this machine ("DESTDIR=/tmp/stage"
    # is fine): then the checkout's own path and the shared folder beside it are what must not appear.
    generic = {Path(p) for p in ("/tmp", "/var/tmp", "/home", "/root", "/opt", "/srv", "/usr", "/var")} | {Path.home()}
    folders = [ROOT, ROOT.parent / "shared"] if ROOT.parent in generic else [ROOT.parent]
    here = re.compile("|".join(re.escape(str(folder)) + r"/" for folder in folders))
    offenders = [str(p.relative_to(ROOT)) for p in committed_text_files()
                 if here.search(p.read_text(errors="replace"))]
    assert offenders == []
