"""One import name: the engine installs as `giftnet` only, so it cannot collide with other packages.

The repository keeps the top-level folders kernels/, pipeline/ and bench/; giftnet/kernels,
giftnet/pipeline and giftnet/bench link to them, and every import goes through `giftnet.`.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("kernels", "pipeline", "bench")
TOP_LEVEL_IMPORT = re.compile(rf"^\s*(from|import)\s+({'|'.join(FOLDERS)})(\.|\s|$)", re.M)


def tracked_python_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files", "*.py"], cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip("not a git checkout")
    return [ROOT / p for p in out.stdout.split()]


@pytest.mark.parametrize("folder", FOLDERS)
def test_each_folder_is_reached_through_giftnet(folder):
    link = ROOT / "giftnet" / folder
    assert link.is_symlink() and link.resolve() == (ROOT / folder).resolve()


def test_no_module_imports_a_top_level_name():
    offenders = [
        f"{path.relative_to(ROOT)}: {m.group(0).strip()}"
        for path in tracked_python_files()
        for m in TOP_LEVEL_IMPORT.finditer(path.read_text(encoding="utf-8"))
    ]
    assert not offenders, "import through giftnet. instead:\n" + "\n".join(offenders)


def test_the_distribution_holds_only_giftnet():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["tool"]["setuptools"]["packages"]["find"]["include"] == ["giftnet*"]
    scripts = project["project"]["scripts"].values()
    assert all(s.startswith("giftnet.") for s in scripts)


def test_importing_the_engine_binds_no_top_level_package(tmp_path):
    code = (
        "import sys, giftnet.model, giftnet.kernels, giftnet.pipeline.loaders, giftnet.bench.common;"
        f"print(sorted(set(sys.modules) & {set(FOLDERS)!r}))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
