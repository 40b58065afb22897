"""Every launch of the relation kernels compiles for the RTX 3090 (sm_86) and Hopper (sm_90).

The interpreter runs the kernels as Python, so it cannot show code that fails to compile,
spills registers or needs more shared memory than an RTX 3090 block has. This compiles each
`giftnet.kernels.relation.aot.aot_specs()` entry ahead of time, in subprocesses without
TRITON_INTERPRET (the interpreter replaces the JIT functions), for sm_86 and sm_90 as
declared, and once more for sm_86 with the pointers, sizes and strides marked multiples of 16,
as Triton specializes them at launch for the E1-E4 maps (vectorised loads: other code).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from giftnet.kernels.aot import SM86_MAX_SHARED

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = r"""
import dataclasses, json, sys
from giftnet.kernels import aot
from giftnet.kernels.relation.aot import aot_divisible, aot_specs

def compile_divisible(spec, arch):
    return aot.compile_spec(dataclasses.replace(spec, divisible=aot_divisible(spec)), arch)

part, parts = int(sys.argv[1]), int(sys.argv[2])
jobs = [(s, arch, div) for s in aot_specs() for arch, div in ((86, False), (90, False), (86, True))]
for spec, arch, div in jobs[part::parts]:
    row = {"name": spec.name, "arch": arch, "divisible": div, "hot": spec.hot}
    try:
        r = (compile_divisible if div else aot.compile_spec)(spec, arch)
        row.update(registers=r.registers, stack=r.stack, local=r.local, shared=r.shared)
    except Exception as exc:
        row["error"] = f"{type(exc).__name__}: {exc}"[:3000]
    print(json.dumps(row), flush=True)
"""


def _compile_all(tmp_path: Path, parts: int = 2) -> list[dict]:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path / "triton-cache")  # compile for real, not from a cache
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", SCRIPT, str(i), str(parts)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(parts)
    ]
    rows = []
    for proc in procs:
        out, err = proc.communicate(timeout=1500)  # 435 fresh compiles: over 10 min on 2 loaded cores
        assert proc.returncode == 0, f"AOT subprocess failed:\n{err[-4000:]}"
        rows += [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return rows


@pytest.mark.slow
def test_relation_kernels_compile_for_sm86_and_sm90(tmp_path):
    from giftnet.kernels.relation.aot import AOT_LAYOUTS, CONFIGS, DTYPES, LOSS_CHANNELS, LOSS_DTYPES, aot_specs

    specs = aot_specs()
    # every feature kernel (map sums, map logits, backward of the loss and of the map) x config x
    # dtype x layout; the loss's 4 feature kernels x channel count x dtype x layout and its
    # finalize (with and without gradient) per channel count; the map's mean
    n_loss = len(LOSS_CHANNELS) * (4 * len(LOSS_DTYPES) * len(AOT_LAYOUTS) + 2)
    assert len(specs) == 4 * len(CONFIGS) * len(DTYPES) * len(AOT_LAYOUTS) + n_loss + 1
    assert len({s.name for s in specs}) == len(specs)

    rows = _compile_all(tmp_path)
    assert len(rows) == 3 * len(specs)
    errors = [f"{r['name']} sm_{r['arch']}: {r['error']}" for r in rows if "error" in r]
    assert not errors, "\n".join(errors)
    too_big = [r for r in rows if r["shared"] > SM86_MAX_SHARED]
    assert not too_big, f"shared memory over {SM86_MAX_SHARED} B: {too_big}"
    spills = [r for r in rows if r["hot"] and (r["stack"] or r["local"])]
    assert not spills, f"register spills in hot kernels: {spills}"
