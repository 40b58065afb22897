"""Inputs checked and outputs never lost (issue 11), for the checker, evaluate and harmonize: list lines
that leave the dataset root, FIFOs, outputs that are inputs, unwritable formats, a full disk, and CLIs
that turn only the user's mistakes into messages."""

from __future__ import annotations

import contextlib
import errno
import io
import os
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from giftnet import evaluate, fileio, harmonize
from giftnet.config import ModelConfig
from giftnet.errors import DataError, UsageError
from giftnet.model import GiftNet
from giftnet.pipeline import check, images
from giftnet.pipeline.ihd import read_list_file, read_pairs
from giftnet.weights import save_weights

H = W = 16


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("w") / "model.safetensors"
    save_weights(GiftNet(ModelConfig(base_channels=8, gift_sites=("E1",))), path)
    return path


def _photo(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)


def _mask() -> np.ndarray:
    mask = np.zeros((H, W), np.uint8)
    mask[4:12, 4:12] = 255
    return mask


@pytest.fixture
def dataset(tmp_path) -> Path:
    """A one-subset iHarmony4 root with two test pairs."""
    folder = tmp_path / "data" / "HT"
    for sub in ("composite_images", "masks", "real_images"):
        (folder / sub).mkdir(parents=True)
    for i, name in enumerate(("a_1_1", "b_1_1")):
        Image.fromarray(_photo(i)).save(folder / "composite_images" / f"{name}.jpg", quality=95)
        Image.fromarray(_photo(i + 9)).save(folder / "real_images" / f"{name[0]}.jpg", quality=95)
        Image.fromarray(_mask()).save(folder / "masks" / f"{name[:3]}.png")
    (folder / "HT_test.txt").write_text("a_1_1.jpg\nb_1_1.jpg\n")
    (folder / "HT_train.txt").write_text("a_1_1.jpg\n")
    return folder.parent


# ---- list lines that leave the dataset root ---------------------------------------------------------

ESCAPES = {
    "dotdot": "../../outside/HT/composite_images/a_1_1.jpg",
    "dotdot_inside": "HT/../../outside/composite_images/a_1_1.jpg",
    "absolute": "/etc/HT/composite_images/a_1_1.jpg",
    "windows_drive": "C:\\data\\HT\\composite_images\\a_1_1.jpg",
    "backslash_dotdot": "..\\..\\HT\\composite_images\\a_1_1.jpg",
}


@pytest.mark.parametrize("case", ESCAPES)
def test_list_lines_leaving_the_root_are_refused_naming_file_and_line(dataset, case):
    """Before: `../..` was resolved against the root and trained on; an absolute path lost its '/'."""
    outside = dataset.parent / "outside" / "HT"
    for sub in ("composite_images", "masks", "real_images"):
        (outside / sub).mkdir(parents=True, exist_ok=True)
    listing = dataset / "IHD_test.txt"
    listing.write_text(f"HT/composite_images/a_1_1.jpg\n{ESCAPES[case]}\n")
    pairs, bad = read_list_file(listing)
    assert [p.name for p in pairs] == ["a_1_1"]
    assert len(bad) == 1 and bad[0].line_no == 2 and "leaves the dataset root" in bad[0].reason
    assert str(bad[0]).startswith(f"{listing}:2: ")
    (dataset / "HT" / "HT_test.txt").unlink()  # make the global list the one read
    problems = [p for p in check.check_dataset(dataset, split="test") if p.severity == "error"]
    assert [(p.path, p.message.split(":")[0]) for p in problems] == [(listing, "line 2")]
    with pytest.raises(DataError, match=rf"{listing}:2: path leaves the dataset root"):
        read_pairs(dataset, split="test")


def test_a_symlinked_subset_folder_is_allowed(dataset, tmp_path):
    """Judgement: a symlink is the user's own filesystem choice (datasets on another disk), not an escape."""
    root = tmp_path / "linked"
    root.mkdir()
    (root / "HT").symlink_to(dataset / "HT")
    assert [p.name for p in read_pairs(root, split="test")] == ["a_1_1", "b_1_1"]


# ---- non-regular files ---------------------------------------------------------------------------------


def _returns_quickly(call, *args) -> BaseException | object:
    """Run call(*args) in a thread; fail if it blocks (a FIFO opened for reading waits for a writer)."""
    result: list[object] = []

    def target() -> None:
        try:
            result.append(call(*args))
        except BaseException as exc:
            result.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(10)
    assert not thread.is_alive(), f"{call} blocked"
    return result[0]


@pytest.fixture
def fifo(tmp_path) -> Path:
    path = tmp_path / "pipe.png"
    os.mkfifo(path)
    yield path
    # Unblock a reader stuck on the FIFO, if the code under test opened it after all.
    with contextlib.suppress(OSError):  # no reader: nothing is stuck
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))


def test_fifo_images_and_weights_are_refused_without_blocking(fifo, weights, tmp_path, capsys):
    for read in (images.read_rgb, images.read_mask, images.read_header, images.dali_bytes):
        err = _returns_quickly(read, fifo)
        assert isinstance(err, DataError) and "FIFO" in str(err) and str(fifo) in str(err)
    err = _returns_quickly(fileio.check_regular_file, fifo, "--init-weights")
    assert isinstance(err, UsageError) and "FIFO" in str(err)
    mask = tmp_path / "m.png"
    Image.fromarray(_mask()).save(mask)
    argv = ["--image", str(fifo), "--mask", str(mask), "--weights", str(weights), "--out", str(tmp_path / "o.png")]
    assert _returns_quickly(harmonize.main, argv) == 2
    argv = ["--image", str(mask), "--mask", str(mask), "--weights", str(fifo), "--out", str(tmp_path / "o.png")]
    assert _returns_quickly(harmonize.main, argv) == 2
    err = capsys.readouterr().err
    assert f"{fifo}: --image is a FIFO" in err and f"{fifo}: weights file is a FIFO" in err


def test_checker_reports_a_fifo_in_the_dataset(dataset):
    victim = dataset / "HT" / "composite_images" / "b_1_1.jpg"
    victim.unlink()
    os.mkfifo(victim)
    problems = _returns_quickly(check.check_dataset, dataset)
    assert any(p.path == victim and "FIFO" in p.message for p in problems)


# ---- never destroy a user's file -------------------------------------------------------------------


def _eval_argv(dataset: Path, weights: Path, *extra: str) -> list[str]:
    return ["--data", str(dataset), "--weights", str(weights), "--device", "cpu", "--backend", "torch",
            "--workers", "0", "--no-progress", "--size", "16", *extra]  # fmt: skip


@pytest.mark.parametrize("target", ["weights", "list", "image", "hard_link_to_weights"])
def test_evaluate_json_never_replaces_an_input(dataset, weights, tmp_path, capsys, target):
    """Before: `--json` onto the weights file or a dataset list replaced it."""
    own = tmp_path / "own.safetensors"
    own.write_bytes(weights.read_bytes())
    paths = {
        "weights": own,
        "list": dataset / "HT" / "HT_test.txt",
        "image": dataset / "HT" / "real_images" / "a.jpg",
        "hard_link_to_weights": tmp_path / "results.json",
    }
    if target == "hard_link_to_weights":
        os.link(own, paths[target])
    before = paths[target].read_bytes()
    assert evaluate.main(_eval_argv(dataset, own, "--json", str(paths[target]))) == 2
    err = capsys.readouterr().err
    assert "--json" in err and "is the input" in err and "Traceback" not in err
    assert paths[target].read_bytes() == before


def _harmonize_inputs(tmp_path: Path) -> tuple[Path, Path]:
    image, mask = tmp_path / "c.png", tmp_path / "m.png"
    Image.fromarray(_photo()).save(image)
    Image.fromarray(_mask()).save(mask)
    return image, mask


@pytest.mark.parametrize("link", ["hard", "symbolic", "same_path_mask"])
def test_harmonize_out_that_is_the_input_is_refused(weights, tmp_path, capsys, link):
    """Before: `--out` as a hard link to the input overwrote the input."""
    image, mask = _harmonize_inputs(tmp_path)
    out = tmp_path / "out.png"
    if link == "hard":
        os.link(image, out)
    elif link == "symbolic":
        out.symlink_to(image)
    else:
        out = mask
    before = image.read_bytes(), mask.read_bytes()
    argv = ["--image", str(image), "--mask", str(mask), "--weights", str(weights), "--out", str(out)]
    assert harmonize.main(argv) == 2
    assert "is the input" in capsys.readouterr().err
    assert (image.read_bytes(), mask.read_bytes()) == before


@pytest.mark.parametrize("suffix", [".blp", ".xbm", ".txt", ".safetensors"])
def test_unwritable_output_formats_are_refused_before_any_work(weights, tmp_path, capsys, suffix):
    """Before: `.blp` / `.xbm` truncated an existing output to 0 bytes after the network ran."""
    image, mask = _harmonize_inputs(tmp_path)
    out = tmp_path / f"old{suffix}"
    out.write_bytes(b"the user's previous file")
    argv = ["--image", str(image), "--mask", str(mask), "--weights", str(weights), "--out", str(out)]
    assert harmonize.main(argv) == 2
    err = capsys.readouterr().err
    assert str(out) in err and "Traceback" not in err
    assert out.read_bytes() == b"the user's previous file"
    with pytest.raises(UsageError):
        images.output_format(out)


class _DiskFull:
    """Simulate a full disk: `fileio`'s os.fdopen returns files whose writes fail after `room` bytes."""

    def __init__(self, room: int) -> None:
        self.room, self.failures = room, 0

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        real_fdopen = os.fdopen

        def fdopen(fd, *args, **kwargs):
            return _FullFile(real_fdopen(fd, *args, **kwargs), self)

        monkeypatch.setattr(fileio.os, "fdopen", fdopen)


class _FullFile(io.RawIOBase):
    def __init__(self, inner, disk: _DiskFull) -> None:
        super().__init__()
        self.inner, self.disk, self.written = inner, disk, 0

    def write(self, data) -> int:
        if self.written + len(data) > self.disk.room:
            self.disk.failures += 1
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.written += len(data)
        return self.inner.write(data)

    def fileno(self) -> int:  # Pillow then writes through write(), as on a pipe
        raise io.UnsupportedOperation("fileno")

    def writable(self) -> bool:
        return True

    def __exit__(self, *exc) -> None:
        self.inner.close()


def _no_temporaries(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("room", [0, 200])
def test_a_full_disk_leaves_the_old_harmonize_output_intact(weights, tmp_path, capsys, monkeypatch, room):
    image, mask = _harmonize_inputs(tmp_path)
    out = tmp_path / "result.png"
    out.write_bytes(b"yesterday's result")
    disk = _DiskFull(room)
    disk.install(monkeypatch)
    argv = ["--image", str(image), "--mask", str(mask), "--weights", str(weights), "--out", str(out)]
    assert harmonize.main(argv) == 2
    err = capsys.readouterr().err
    assert disk.failures >= 1 and "No space left on device" in err and str(out) in err
    assert out.read_bytes() == b"yesterday's result" and _no_temporaries(tmp_path)


def test_a_full_disk_leaves_the_old_evaluate_json_intact(dataset, weights, tmp_path, capsys, monkeypatch):
    out = tmp_path / "results.json"
    out.write_text('{"old": 1}\n')
    _DiskFull(10).install(monkeypatch)
    assert evaluate.main(_eval_argv(dataset, weights, "--json", str(out))) == 2
    assert "No space left on device" in capsys.readouterr().err
    assert out.read_text() == '{"old": 1}\n' and _no_temporaries(tmp_path)


def test_evaluate_save_images_and_folder_mode_write_atomically(dataset, weights, tmp_path, monkeypatch, capsys):
    saved = tmp_path / "saved"
    (saved / "HT").mkdir(parents=True)
    (saved / "HT" / "a_1_1.png").write_bytes(b"old")
    _DiskFull(100).install(monkeypatch)
    assert evaluate.main(_eval_argv(dataset, weights, "--save-images", str(saved))) == 2
    assert (saved / "HT" / "a_1_1.png").read_bytes() == b"old" and _no_temporaries(saved / "HT")
    monkeypatch.undo()
    capsys.readouterr()
    assert evaluate.main(_eval_argv(dataset, weights, "--save-images", str(saved))) == 0
    assert Image.open(saved / "HT" / "a_1_1.png").size == (16, 16)
    # harmonize's folder mode goes through the same writer
    (tmp_path / "in").mkdir()
    (tmp_path / "masks").mkdir()
    Image.fromarray(_photo()).save(tmp_path / "in" / "x.png")
    Image.fromarray(_mask()).save(tmp_path / "masks" / "x.png")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "x.png").write_bytes(b"old")
    _DiskFull(50).install(monkeypatch)
    argv = ["--image", str(tmp_path / "in"), "--mask", str(tmp_path / "masks"), "--weights", str(weights)]
    assert harmonize.main([*argv, "--out", str(tmp_path / "out")]) == 2
    assert (tmp_path / "out" / "x.png").read_bytes() == b"old"


@pytest.mark.parametrize("writer", ["jpeg", "mask"])
def test_dataset_builders_writers_are_atomic(tmp_path, monkeypatch, writer):
    path = tmp_path / ("x.jpg" if writer == "jpeg" else "x.png")
    path.write_bytes(b"built yesterday")
    write = (
        (lambda: images.write_jpeg(path, _photo()))
        if writer == "jpeg"
        else (lambda: images.write_mask(path, _mask() > 0))
    )
    _DiskFull(64).install(monkeypatch)
    with pytest.raises(OSError, match="No space"):
        write()
    assert path.read_bytes() == b"built yesterday" and _no_temporaries(tmp_path)
    monkeypatch.undo()
    write()
    assert Image.open(path).size == (W, H)


# ---- CLIs: user mistakes are messages, bugs are tracebacks ------------------------------------------


def test_clis_turn_user_errors_into_exit_2_and_let_bugs_raise(dataset, weights, tmp_path, monkeypatch, capsys):
    image, mask = _harmonize_inputs(tmp_path)
    h_argv = ["--image", str(image), "--mask", str(mask), "--weights", str(weights), "--out", str(tmp_path / "o.png")]
    assert check.main([str(dataset), "--workers", "0"]) == 2
    assert "giftnet.pipeline.check: error: --workers must be >= 1" in capsys.readouterr().err

    def bug(*args, **kwargs):
        raise ValueError("an internal bug")

    monkeypatch.setattr(harmonize, "harmonize_image", bug)
    with pytest.raises(ValueError, match="an internal bug"):
        harmonize.main(h_argv)
    monkeypatch.setattr(evaluate, "evaluate", bug)
    with pytest.raises(ValueError, match="an internal bug"):
        evaluate.main(_eval_argv(dataset, weights))
    monkeypatch.setattr(check, "_check", bug)
    with pytest.raises(ValueError, match="an internal bug"):
        check.main([str(dataset)])
    monkeypatch.undo()

    def disk_error(*args, **kwargs):  # an OSError that is not about an output is a bug too
        raise PermissionError(13, "Permission denied", "/somewhere/else")

    monkeypatch.setattr(harmonize, "harmonize_image", disk_error)
    with pytest.raises(PermissionError):
        harmonize.main(h_argv)


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--device", "cuda:7"], "--device cuda:7"),
        (["--device", "meta"], "--device meta"),
        (["--precision", "fp16", "--device", "meta"], "--device meta"),
    ],
)
def test_bad_devices_are_messages(dataset, weights, capsys, argv, words):
    assert evaluate.main([*_eval_argv(dataset, weights), *argv]) == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err
