"""Ahead-of-time compilation of Triton kernels for GPUs that are not present.

Every kernel op registers the launches it may make as `AotSpec`s (one per autotune config,
dtype and layout; giftnet.kernels._dispatch.register_aot_specs). `compile_spec` compiles one for a target such as sm_86 (RTX 3090) and reads its
static resources with the `cuobjdump` that ships with Triton: registers, stack (non-zero
means register spills) and shared memory. This is how CI proves, without a GPU, that the
code it tests under the interpreter compiles and fits the users' card.

Must run without TRITON_INTERPRET (the interpreter replaces the JIT functions);
`python -m giftnet.kernels.aot` runs every spec and prints a table.
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

SM86_MAX_SHARED = 99 * 1024  # bytes of shared memory one block may use on an RTX 3090


@dataclasses.dataclass(frozen=True)
class AotSpec:
    """One launch a kernel may make: the JIT function, argument types and compile options."""

    name: str
    fn: Any
    signature: dict[str, str]  # runtime arguments: "*fp16", "*fp32", "i32", "i64", "fp32", ...
    constexprs: dict[str, Any]
    num_warps: int = 4
    num_stages: int = 3
    hot: bool = True  # a hot kernel must not spill
    maxnreg: int | None = None  # register cap per thread (triton.Config.maxnreg)
    # Arguments Triton may specialise as multiples of 16 at launch (as it does for aligned
    # pointers, sizes and strides at the GiftNet shapes): that code differs, so it is compiled too.
    divisible: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Resources:
    name: str
    arch: int
    registers: int
    stack: int
    shared: int
    local: int

    @property
    def spills(self) -> bool:
        return self.stack > 0 or self.local > 0


def cuobjdump_path() -> Path:
    import triton

    return Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"


def _ast_source(spec: AotSpec):
    from triton.compiler import ASTSource

    sig = dict(spec.signature)
    for name in spec.constexprs:
        sig.setdefault(name, "constexpr")
    attrs = {(spec.fn.arg_names.index(name),): [["tt.divisibility", 16]] for name in spec.divisible}
    return ASTSource(fn=spec.fn, signature=sig, constexprs=dict(spec.constexprs), attrs=attrs or None)


def compile_spec(spec: AotSpec, arch: int) -> Resources:
    """Compile `spec` for sm_`arch` and return its static resource usage."""
    import triton
    from triton.backends.compiler import GPUTarget

    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        raise RuntimeError("giftnet.kernels.aot must run without TRITON_INTERPRET=1")
    kernel = triton.compile(
        _ast_source(spec),
        target=GPUTarget("cuda", arch, 32),
        options={"num_warps": spec.num_warps, "num_stages": spec.num_stages}
        | ({"maxnreg": spec.maxnreg} if spec.maxnreg else {}),
    )
    with tempfile.TemporaryDirectory() as tmp:
        cubin = Path(tmp) / "k.cubin"
        cubin.write_bytes(kernel.asm["cubin"])
        out = subprocess.run(
            [str(cuobjdump_path()), "--dump-resource-usage", str(cubin)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout

    def field(key: str) -> int:
        match = re.search(rf"\b{key}:(\d+)", out)
        if match is None:
            raise RuntimeError(f"cuobjdump printed no {key} for {spec.name}:\n{out}")
        return int(match.group(1))

    shared = max(int(kernel.metadata.shared), field("SHARED"))
    return Resources(spec.name, arch, field("REG"), field("STACK"), shared, field("LOCAL"))


def config_tag(config: Any) -> str:
    """Short name of a triton.Config for spec names: its meta-parameters, warps, stages, register cap."""
    meta = ",".join(f"{k.removeprefix('BLOCK_')}{v}" for k, v in config.kwargs.items())
    cap = f",r{config.maxnreg}" if getattr(config, "maxnreg", None) else ""
    return f"{meta},w{config.num_warps},s{config.num_stages}{cap}"


# Integer arguments that are not multiples of 16 at the GiftNet sites: the batch handled per
# launch may be anything, P counts programs, size_bucket is a log4 autotune key; the rest count
# slots, bands, samples per slot and channel tiles (masked_modconv's weight/style gradients).
NOT_DIVISIBLE = ("B", "P", "size_bucket", "n_bands", "group", "t_tiles", "s_tiles", "n_slots", "n_o", "n_i")


def site_divisible(spec: AotSpec) -> tuple[str, ...]:
    """Arguments of `spec` that are multiples of 16 at the GiftNet sites (pointers, channel and
    pixel counts, strides): Triton specializes on that at launch (vector widths, registers)."""
    return tuple(k for k, v in spec.signature.items() if v.startswith("*") or (v == "i32" and k not in NOT_DIVISIBLE))


def site_variant(spec: AotSpec) -> AotSpec:
    """`spec` as it compiles at the GiftNet sites (named with a [div16] suffix)."""
    return dataclasses.replace(spec, name=spec.name + "[div16]", divisible=site_divisible(spec))


def _compile_record(job: tuple[int, int, bool]) -> dict:
    index, arch, site = job
    spec = all_specs()[index]
    spec = site_variant(spec) if site else spec
    r = compile_spec(spec, arch)
    return {
        **dataclasses.asdict(r),
        "spills": r.spills,
        "ok": r.shared <= SM86_MAX_SHARED and not (spec.hot and r.spills),
        "hot": spec.hot,
        "site_specialized": site,
        "num_warps": spec.num_warps,
        "num_stages": spec.num_stages,
        "constexprs": {k: v if isinstance(v, (bool, int, float)) else str(v) for k, v in spec.constexprs.items()},
    }


def all_specs() -> list[AotSpec]:
    """Every launch of every Triton kernel op: each op registers its specs (giftnet.kernels._dispatch)."""
    from giftnet.kernels._dispatch import aot_providers

    specs: list[AotSpec] = []
    for provider in aot_providers().values():
        specs.extend(provider())
    return specs


def main(argv: list[str] | None = None) -> int:
    """Compile every spec for sm_86 and sm_90, generic and as specialized at the GiftNet sites,
    print the table; `--json OUT` also writes the rows."""
    import argparse
    import json
    from concurrent.futures import ProcessPoolExecutor

    from rich.console import Console
    from rich.table import Table

    parser = argparse.ArgumentParser(prog="python -m giftnet.kernels.aot", description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write one record per (kernel, arch) to this JSON file")
    parser.add_argument("--jobs", type=int, default=2, help="compile processes (default 2)")
    parser.add_argument(
        "--variants",
        choices=("both", "site", "generic"),
        default="both",
        help="site: only as specialized at the GiftNet sites (16-divisible sizes and strides); generic: only unspecialized",
    )
    args = parser.parse_args(argv)
    table = Table(title="Static resources of the Triton kernels (ahead-of-time compile)")
    for col in ("kernel", "arch", "registers", "stack", "local", "shared (B)", "ok"):
        table.add_column(col)
    sites = {"both": (False, True), "site": (True,), "generic": (False,)}[args.variants]
    jobs = [(i, arch, site) for i in range(len(all_specs())) for site in sites for arch in (86, 90)]
    with ProcessPoolExecutor(max(1, args.jobs)) as pool:
        records = []
        for n, r in enumerate(pool.map(_compile_record, jobs), 1):
            records.append(r)
            print(
                f"{n}/{len(jobs)} {r['name']} sm_{r['arch']}: {r['registers']} registers", file=sys.stderr, flush=True
            )
    for r in records:
        cells = (r["name"], f"sm_{r['arch']}", r["registers"], r["stack"], r["local"], r["shared"])
        table.add_row(*map(str, cells), "yes" if r["ok"] else "NO")
    Console().print(table)
    if args.json:
        from giftnet.fileio import atomic_write_text

        atomic_write_text(args.json, json.dumps(records, indent=1) + "\n")
    return 0 if all(r["ok"] for r in records) else 1


if __name__ == "__main__":
    raise SystemExit(main())
