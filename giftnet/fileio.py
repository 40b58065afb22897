"""Every file the engine writes, and every user file it opens, goes through here.

Writes are atomic: the bytes go to a temporary beside the target, are fsynced and renamed over it,
so a crash, a full disk or an encoder that fails leaves the previous file intact. New files get
the permissions the user's umask gives (0666 & ~umask), not mkstemp's 0600, so teammates on shared
storage can read weights. Appends (logs) write whole lines with one `write` and fsync.

Inputs: `check_regular_file` refuses FIFOs, devices and folders before anything opens them (a
FIFO would block forever), and `refuse_overwrite_input` refuses an output that is (the same file
as) one of the inputs, hard links included.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from giftnet.errors import UsageError, UserError

# Inert unless set: tests set it to kill a process while a temporary is complete but not yet renamed.
_TEST_WRITE_DELAY_S = float(os.environ.get("GIFTNET_TEST_WRITE_DELAY_S", "0") or 0)


def _umask() -> int:
    # os.umask can only be read by setting it; set it back at once (single-threaded at start-up).
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """Open a temporary beside `path` for binary writing; on success fsync and rename it over `path`.

    On any exception the temporary is removed and `path` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        if _TEST_WRITE_DELAY_S:
            time.sleep(_TEST_WRITE_DELAY_S)  # tests: widen the window in which a kill meets a temporary
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` atomically (see `atomic_writer`)."""
    with atomic_writer(path) as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def append_line(path: str | os.PathLike, line: str) -> None:
    """Append one line with a single write and fsync, so a crash leaves at most one cut last line.

    Readers of such logs must drop (or repair) a last line without its newline.
    """
    data = (line.rstrip("\n") + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        written = os.write(fd, data)
        if written != len(data):
            raise OSError(f"{path}: short write while appending ({written} of {len(data)} bytes)")
        os.fsync(fd)
    finally:
        os.close(fd)


def check_regular_file(path: str | os.PathLike, what: str, *, error: type[UserError] = UsageError) -> Path:
    """Return `path` if it is an existing regular file (links followed); else `error` naming it and `what`.

    Called before opening any user-given input, so a FIFO or a device never blocks the program
    (`stat` does not open the file). Dataset readers pass error=DataError.
    """
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise error(f"{path}: {what} does not exist") from None
    except OSError as exc:
        raise error(f"{path}: {what} cannot be read ({exc.strerror})") from None
    if stat.S_ISDIR(mode):
        raise error(f"{path}: {what} is a folder, not a file")
    if not stat.S_ISREG(mode):
        kind = "a FIFO" if stat.S_ISFIFO(mode) else "a device or socket"
        raise error(f"{path}: {what} is {kind}, not a regular file (refused: reading it could block)")
    return path


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """True if both paths exist and name the same file (symbolic and hard links included)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _identity(path: str | os.PathLike) -> tuple[int, int] | None:
    """(device, inode) of an existing file, links followed; None if there is none."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


class InputGuard:
    """The inputs of a command, so that no output it writes can replace one (hard and symbolic links too).

    Built once from every input (stat each); `check(output)` is then one stat, for folder modes
    that write thousands of files.
    """

    def __init__(self, inputs: Iterable[str | os.PathLike]) -> None:
        self._inputs: dict[tuple[int, int], Path] = {}
        for item in inputs:
            key = _identity(item)
            if key is not None:
                self._inputs.setdefault(key, Path(item))

    def check(self, output: str | os.PathLike, what: str) -> None:
        """UsageError if `output` is (the same file as) one of the inputs."""
        key = _identity(output)
        if key is not None and key in self._inputs:
            raise UsageError(f"{what} {output} is the input {self._inputs[key]}; choose another output path")


def refuse_overwrite_input(output: str | os.PathLike, inputs: Iterable[str | os.PathLike], what: str) -> None:
    """UsageError if `output` is (the same file as) any of `inputs`: an output never replaces an input."""
    InputGuard(inputs).check(output, what)


@contextlib.contextmanager
def output_errors(path: str | os.PathLike, what: str) -> Iterator[None]:
    """Turn an OSError while writing the output `path` (full disk, no permission) into a UsageError.

    The write itself goes through atomic_writer, so the old file, if any, is still intact.
    """
    try:
        yield
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise UsageError(f"{what} {path}: cannot be written ({reason}); any previous file is unchanged") from None
