"""bench/gpu_check.sh on a CPU: the plan, the two returned files, the command line, a tiny real run."""

from __future__ import annotations

import csv
import io
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "bench" / "gpu_check.sh"
ORDER = ["smoke", "modconv", "relation", "train", "train_e", "pytest", "data", "report"]


def run_check(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(REPO)}
    env.pop("TRITON_INTERPRET", None)
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def archive_members(out: Path) -> dict[str, bytes]:
    with tarfile.open(out / "gpu_check.tar.gz") as tar:
        return {m.name.removeprefix("./"): tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def test_dry_run_prints_the_plan_in_order_within_the_budget_and_returns_two_files(tmp_path):
    out = tmp_path / "out"
    proc = run_check("--dry-run", "--tiny", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    plan = re.findall(r"PLAN (\w+) \(limit (\d+)s\): (.*)", proc.stdout)
    assert [name for name, _, _ in plan] == ORDER
    # With start-up the whole script fits 7 minutes; the data step (only with DALI) gets what is left.
    assert sum(int(limit) for name, limit, _ in plan if name != "data") <= 400
    commands = {name: cmd for name, _, cmd in plan}
    assert "--backends torch dali" in commands["data"] and "tests/test_loaders.py" in commands["pytest"]
    assert "--tiny" in commands["modconv"] and "--configs abc" in commands["train"]
    assert (
        "--configs ae" in commands["train_e"] and "--junitxml=" in commands["pytest"] and "-m gpu" in commands["pytest"]
    )
    assert sorted(p.name for p in out.iterdir()) == ["gpu_check.log", "gpu_check.tar.gz"]
    assert "env.txt" in archive_members(out)


def test_help_is_not_an_output_folder_and_bad_arguments_exit_2(tmp_path):
    proc = run_check("--help", cwd=tmp_path)
    assert proc.returncode == 0 and "OUT_DIR" in proc.stdout
    assert list(tmp_path.iterdir()) == []
    for args in (["--bogus", "x"], ["--steps", "nope", "x"], []):
        proc = run_check(*args, cwd=tmp_path)
        assert proc.returncode == 2, (args, proc.stderr)
        assert "gpu_check" in proc.stderr or "usage" in proc.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_tiny_run_appends_measured_rows_into_the_archive(tmp_path):
    out = tmp_path / "out"
    proc = run_check("--tiny", "--steps", "smoke,relation", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["gpu_check.log", "gpu_check.tar.gz"]
    files = archive_members(out)
    assert {"env.txt", "smoke.log", "relation.log", "kernels_relation.json", "results.csv"} <= set(files)
    rows = list(csv.DictReader(io.StringIO(files["results.csv"].decode())))
    new = [r for r in rows if r["benchmark"] == "kernels_relation" and r["metric"] == "ms" and "E4" in r["config"]]
    assert new, "the relation rows measured in this run are in the archived CSV"
    assert "END relation: exit 0" in (out / "gpu_check.log").read_text()
