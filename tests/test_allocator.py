"""giftnet.allocator: the glibc settings apply once per process and can be turned off."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CODE = "from giftnet.allocator import configure_allocator as c; print(c(), c())"


def _run(env_value: str | None) -> str:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("GIFTNET_MALLOC", None)
    if env_value is not None:
        env["GIFTNET_MALLOC"] = env_value
    return subprocess.run([sys.executable, "-c", CODE], env=env, capture_output=True, text=True, check=True).stdout


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_applies_on_glibc_once_and_can_be_turned_off():
    import platform

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("not glibc")
    assert _run(None).split() == ["True", "True"]
    assert _run("default").split() == ["False", "False"]


def test_entry_points_call_it():
    for path in ("train.py", "giftnet/evaluate.py", "giftnet/harmonize.py"):
        assert "configure_allocator()" in (ROOT / path).read_text(), path
