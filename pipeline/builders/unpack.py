"""Unpack a released zip (ccHarmony's masks, patch colours, matrices) so the builders can read a folder.

Members are extracted one by one under a fresh temporary folder: absolute paths, `..` parts and
links are refused (a zip must not write outside its folder), and the archive itself is only read.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from giftnet.pipeline.pairs import DatasetError


def _safe_members(archive: zipfile.ZipFile, path: Path) -> list[zipfile.ZipInfo]:
    members = []
    for info in archive.infolist():
        name = PurePosixPath(info.filename)
        if name.is_absolute() or ".." in name.parts or (info.external_attr >> 16) & 0o170000 == 0o120000:
            raise DatasetError(f"{path}: refusing the unsafe member {info.filename!r}")
        members.append(info)
    return members


def _content_root(folder: Path) -> Path:
    """The folder holding the files: descend through a lone top-level folder (foreground_masks/...)."""
    while True:
        entries = [p for p in folder.iterdir() if p.name != "__MACOSX"]
        if len(entries) != 1 or not entries[0].is_dir():
            return folder
        folder = entries[0]


@contextlib.contextmanager
def folder_or_zip(path: Path, what: str) -> Iterator[Path]:
    """Yield `path` itself when it is a folder, or the unpacked contents of a .zip (removed afterwards)."""
    path = Path(path)
    if path.is_dir():
        yield path
        return
    if not path.is_file():
        raise DatasetError(f"{path}: {what} does not exist (give a folder or the released .zip)")
    if not zipfile.is_zipfile(path):
        raise DatasetError(f"{path}: {what} is neither a folder nor a zip archive")
    scratch = Path(tempfile.mkdtemp(prefix=f"giftnet-{path.stem}-"))
    try:
        with zipfile.ZipFile(path) as archive:
            for info in _safe_members(archive, path):
                archive.extract(info, scratch)
        yield _content_root(scratch)
    except zipfile.BadZipFile as err:
        raise DatasetError(f"{path}: damaged zip archive ({err})") from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
