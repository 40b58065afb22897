"""Writing an iHarmony4-layout subset atomically: build in a scratch folder, then rename into place.

A crashed or concurrent build (several DDP ranks) never leaves a half-written subset behind: the
finished folder appears with one `os.rename`, and a manifest written last marks it as complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from giftnet.pipeline.ihd import COMPOSITE_DIR, MASK_DIR, REAL_DIR
from giftnet.pipeline.pairs import DatasetError

MANIFEST = "manifest.json"


@contextlib.contextmanager
def scratch_subset(out: Path, subset: str) -> Iterator[Path]:
    """A fresh scratch folder `out/.<subset>.building-<pid>` with the three image folders, removed if
    the build fails (and by `finish_subset` when it succeeds)."""
    scratch = out / f".{subset}.building-{os.getpid()}"
    if scratch.exists():
        shutil.rmtree(scratch)
    for folder in (COMPOSITE_DIR, MASK_DIR, REAL_DIR):
        (scratch / folder).mkdir(parents=True)
    try:
        yield scratch
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise


def write_list(scratch: Path, subset: str, split: str, composite_names: list[str]) -> None:
    """`<subset>_<split>.txt` in the scratch folder: one composite file name a line (LF endings)."""
    path = scratch / f"{subset}_{split}.txt"
    path.write_text("".join(f"{name}\n" for name in composite_names), encoding="utf-8")


def read_manifest(subset_dir: Path) -> dict[str, Any] | None:
    """The manifest of a finished subset, or None when there is none (or it cannot be parsed)."""
    try:
        return json.loads((subset_dir / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def manifest_complete(subset_dir: Path, manifest: dict[str, Any]) -> bool:
    """True when every file the manifest lists exists with its recorded size."""
    for rel, size in manifest.get("files", {}).items():
        try:
            if (subset_dir / rel).stat().st_size != size:
                return False
        except OSError:
            return False
    return bool(manifest.get("files"))


def finish_subset(scratch: Path, final: Path, params: dict[str, Any]) -> Path:
    """Write the manifest (params + every file's size) into `scratch` and rename it to `final`.

    An existing `final` is replaced only if it carries a manifest (so it was made by a builder);
    if another process finished the same build first, its copy is kept and ours discarded.
    """
    files = {
        str(p.relative_to(scratch)).replace(os.sep, "/"): p.stat().st_size
        for p in sorted(scratch.rglob("*"))
        if p.is_file()
    }
    manifest = {"params": params, "files": files}
    (scratch / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    if final.exists():
        existing = read_manifest(final)
        if existing is None:
            shutil.rmtree(scratch)
            raise DatasetError(f"{final}: exists and was not written by a pipeline builder; choose another output")
        if existing.get("params") == params and manifest_complete(final, existing):
            shutil.rmtree(scratch)
            return final
        trash = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.rename(final, trash)
        shutil.rmtree(trash)
    try:
        os.rename(scratch, final)
    except OSError:
        existing = read_manifest(final)
        shutil.rmtree(scratch, ignore_errors=True)
        if existing is None or existing.get("params") != params:
            raise
    return final


def fingerprint(paths: list[Path]) -> str:
    """A short hash of file names and sizes: tells a reused build whether its inputs changed."""
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(f"{path.name}\0{path.stat().st_size}\n".encode())
    return digest.hexdigest()[:16]
