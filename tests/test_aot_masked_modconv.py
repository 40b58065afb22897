"""The masked modulated convolution's kernels compile for the RTX 3090 (sm_86) and Hopper (sm_90).

Every launch the op may make (each autotune config x fp32/fp16/bf16 x NCHW/channels_last) is
compiled ahead of time, without a GPU, in a subprocess without TRITON_INTERPRET (the
interpreter replaces the JIT functions); so is the variant specialized on 16-divisible
arguments that runs at the GiftNet sites. Fails on a compile error, more shared memory than
the RTX 3090's 99 KB per block, or register spills (non-zero STACK/LOCAL) in a hot kernel.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")

from giftnet.kernels.aot import SM86_MAX_SHARED
from giftnet.kernels.masked_modconv import launch, launch_grads
from giftnet.kernels.masked_modconv.aot import aot_specs

REPO = Path(__file__).resolve().parents[1]
ARCHS = (86, 90)
# The div16 variant (what runs at the GiftNet sites) is compiled too, for the dtypes with the
# largest (fp32) and the training (bf16) footprint: fp16 compiles to nearly the same as bf16.
SPECIALIZED_DTYPES = ("fp32", "bf16")

_COMPILE_ALL = r"""
import json, os, sys
from concurrent.futures import ProcessPoolExecutor

def compile_one(job):
    index, arch, specialized = job
    from giftnet.kernels.aot import compile_spec
    from giftnet.kernels.masked_modconv.aot import compile_specialized
    from giftnet.kernels.masked_modconv.aot import aot_specs
    spec = aot_specs()[index]
    name = spec.name + ("[div16]" if specialized else "")
    try:
        r = (compile_specialized if specialized else compile_spec)(spec, arch)
    except Exception as exc:
        return {"name": name, "arch": arch, "error": f"{type(exc).__name__}: {exc}"[:2000]}
    return {"name": name, "arch": arch, "hot": spec.hot, "registers": r.registers,
            "stack": r.stack, "local": r.local, "shared": r.shared}

if __name__ == "__main__":
    from giftnet.kernels.masked_modconv.aot import aot_specs
    archs = [int(a) for a in sys.argv[1].split(",")]
    specialized_dtypes = sys.argv[2].split(",")
    jobs = [(i, a, False) for i in range(len(aot_specs())) for a in archs]
    jobs += [(i, a, True) for i, s in enumerate(aot_specs()) for a in archs
             if any(f"[{d}," in s.name for d in specialized_dtypes)]
    with ProcessPoolExecutor(max(1, min(2, os.cpu_count() or 1))) as pool:
        print(json.dumps(list(pool.map(compile_one, jobs))))
"""


def _spec_configs(prefix: str, keys: tuple[str, ...], dtype_arg: str) -> set[tuple]:
    return {
        (*(s.constexprs[k] for k in keys), s.num_warps, s.num_stages, s.signature[dtype_arg])
        for s in aot_specs()
        if s.name.startswith(prefix + "[")
    }


def test_specs_list_every_autotune_config_in_every_dtype():
    """aot_specs() must cover each config the autotuners (and the interpreter fallback) can pick."""
    pixels = ("BLOCK_O", "BLOCK_I", "BLOCK_H", "BLOCK_W")
    for prefix, tuned, keys, dtype_arg in (
        ("conv3x3_scale_blend", launch._fwd_tuned, ("BLOCK_H", "BLOCK_W", "BLOCK_O", "BLOCK_I"), "inp_ptr"),
        ("weight_style_partials", launch_grads._grad_tuned, pixels, "dy_ptr"),
        ("weight_style_finalize", launch_grads._fin_tuned, ("BLOCK_O", "BLOCK_I"), "dw_ptr"),
    ):
        have = _spec_configs(prefix, keys, dtype_arg)
        for cfg in tuned.configs:
            for dtype in ("*fp32", "*fp16", "*bf16"):
                want = (*(cfg.kwargs[k] for k in keys), cfg.num_warps, cfg.num_stages, dtype)
                assert want in have, f"{prefix}: autotune config {cfg} in {dtype} is missing from aot_specs()"


def test_every_launch_compiles_for_sm86_and_sm90_without_spills():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_DEFAULT_FP_FUSION"] = env.get("TRITON_DEFAULT_FP_FUSION", "1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    proc = subprocess.run(
        [sys.executable, "-c", _COMPILE_ALL, ",".join(map(str, ARCHS)), ",".join(SPECIALIZED_DTYPES)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, f"AOT compile process failed:\n{proc.stderr[-4000:]}"
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    specs = aot_specs()
    n_specialized = sum(any(f"[{d}," in s.name for d in SPECIALIZED_DTYPES) for s in specs)
    assert n_specialized > 0
    assert len(results) == len(ARCHS) * (len(specs) + n_specialized)
    problems = []
    for r in results:
        where = f"{r['name']} sm_{r['arch']}"
        if "error" in r:
            problems.append(f"{where}: {r['error']}")
            continue
        if r["shared"] > SM86_MAX_SHARED:
            problems.append(f"{where}: {r['shared']} B of shared memory > {SM86_MAX_SHARED}")
        if r["hot"] and (r["stack"] or r["local"]):
            problems.append(f"{where}: spills (STACK {r['stack']}, LOCAL {r['local']}, {r['registers']} registers)")
    assert not problems, "\n".join(problems)
