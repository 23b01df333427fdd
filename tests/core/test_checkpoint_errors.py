"""Files that are not checkpoints of their extension's framework, as a user passes them by mistake
(a text file, an empty or cut-off download, a Git LFS pointer, the other framework's file, a
folder): ``core.serialization.read_checkpoint`` says what the file is, in one line."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from core.errors import CheckpointError
from core.serialization import describe_start, read_checkpoint, write_checkpoint


def _message(path: Path) -> str:
    with pytest.raises(CheckpointError) as caught:
        read_checkpoint(path)
    message = str(caught.value)
    assert "\n" not in message and len(message) < 400, message
    assert message.startswith(f"{path}: ")
    return message


@pytest.mark.parametrize(("suffix", "framework"), [(".pth", "PyTorch"), (".pkl", "Jittor")])
def test_a_text_file_is_named_as_such(tmp_path: Path, suffix: str, framework: str) -> None:
    path = tmp_path / f"notes{suffix}"
    path.write_text("epoch 3: top-1 51.2\nepoch 4: top-1 53.0\n")
    message = _message(path)
    assert f"not a {framework} checkpoint (starts with text 'epoch 3: top-1 51.2')" in message
    assert "not a readable checkpoint" in message  # the words the other errors share
    assert "weights_only" not in message and "(101)" not in message  # torch's misleading words


def test_text_in_another_encoding_is_still_text(tmp_path: Path) -> None:
    path = tmp_path / "latin1.pth"
    path.write_bytes("résumé of the run".encode("latin-1"))
    assert "(starts with text 'r" in _message(path)


@pytest.mark.parametrize("suffix", [".pth", ".pkl"])
def test_an_empty_file(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"empty{suffix}"
    path.touch()
    assert "(the file is empty)" in _message(path)


def test_a_git_lfs_pointer_says_to_pull(tmp_path: Path) -> None:
    path = tmp_path / "overlock_t_in1k_224.pth"
    path.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:0123\nsize 99\n")
    assert "a Git LFS pointer, not the file itself; run git lfs pull" in _message(path)


def test_the_other_frameworks_file_says_which_extension(tmp_path: Path) -> None:
    write_checkpoint({"w": np.arange(3.0)}, tmp_path / "real.pkl")
    write_checkpoint({"w": np.arange(3.0)}, tmp_path / "real.pth")
    shutil.copy(tmp_path / "real.pkl", tmp_path / "jittor.pth")
    shutil.copy(tmp_path / "real.pth", tmp_path / "torch.pkl")
    jittor_as_pth = _message(tmp_path / "jittor.pth")
    assert "not a PyTorch checkpoint (a Python pickle); it is a Jittor checkpoint" in jittor_as_pth
    assert jittor_as_pth.endswith("name it .pkl")
    torch_as_pkl = _message(tmp_path / "torch.pkl")
    assert "not a Jittor checkpoint (a zip archive); a PyTorch checkpoint?" in torch_as_pkl
    assert torch_as_pkl.endswith("then name it .pth")


@pytest.mark.parametrize("suffix", [".pth", ".pkl"])
def test_a_cut_off_file_is_called_truncated(tmp_path: Path, suffix: str) -> None:
    whole = tmp_path / f"whole{suffix}"
    write_checkpoint({"w": np.arange(10_000.0)}, whole)
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(whole.read_bytes()[:1000])
    message = _message(cut)
    assert "that cannot be read" in message and "may be truncated or corrupt" in message


def test_a_folder_is_not_a_file(tmp_path: Path) -> None:
    folder = tmp_path / "weights.pth"
    folder.mkdir()
    assert _message(folder) == f"{folder}: a folder, not a checkpoint file"


def test_describe_start() -> None:
    assert describe_start(b"") == "the file is empty"
    assert describe_start(b"PK\x03\x04rest") == "a zip archive"
    assert describe_start(b"\x80\x04\x95") == "a Python pickle"
    assert describe_start(b"\x00\x01\x02\xff\xfe") == "starts with bytes 00 01 02 ff fe"
    assert describe_start(b"<!DOCTYPE html><html>") == "an HTML page; a failed download?"
    # a multi-byte character cut by the 64-byte window is still text
    assert describe_start("é".encode() * 31 + b"\xc3") == f"starts with text {'é' * 31!r}"
