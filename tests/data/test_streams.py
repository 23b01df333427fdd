"""Tests of the random-stream table (data/streams.py): frozen ids and hash values, the step seed,
and that no code names a stream by a bare number."""

from __future__ import annotations

import ast
import random
import subprocess
from pathlib import Path

import numpy as np
import pytest

from data.streams import Stream, counter_hash, np_rng, py_rng, step_seed, stream_key

REPO = Path(__file__).resolve().parents[2]
STREAM_USERS = {"counter_hash", "stream_key", "py_rng", "np_rng"}  # stream = 3rd argument


def test_stream_ids_are_frozen() -> None:
    # Changing an id changes every batch and every committed log.
    assert {s.name: s.value for s in Stream} == {
        "ORDER": 1, "FLIP": 2, "TRANSFORM": 3, "CHOICE": 4,
        "ERASE": 5, "ERASE_PIXELS": 6, "MIX": 7, "STEP": 8,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("seed", "epoch", "stream", "index", "want"),
    [
        (0, 0, 1, [0, 1, 2], [15114123258453576503, 1743917784442841159, 13752686981196726545]),
        (7, 3, 5, [100, 2**40], [16421210522586065092, 10089723129723060137]),
        (2**64 - 1, 2**64 - 1, 8, [2**64 - 1], [1315792783796321335]),
    ],
)
def test_counter_hash_values_are_frozen(
    seed: int, epoch: int, stream: int, index: list[int], want: list[int]
) -> None:
    got = counter_hash(seed, epoch, Stream(stream), np.array(index, dtype=np.uint64))
    assert got.dtype == np.uint64 and [int(v) for v in got] == want
    assert stream_key(seed, epoch, Stream(stream), index[0]) == want[0]
    with pytest.raises(ValueError, match="seed and epoch"):
        counter_hash(-1, 0, Stream.ORDER, np.arange(2))


def test_step_seed_is_stream_8_shifted_to_63_bits() -> None:
    # The values engine/loop.py's drop-path seed had before the table existed.
    cases = [(0, 0, 0), (1, 2, 3), (12345, 7, 156), (2**63, 99, 10**6)]
    want = [551704384813184978, 7579765674551513716, 7720533250790267055, 2419264869250173654]
    assert [step_seed(*case) for case in cases] == want
    assert all(0 <= step_seed(3, e, b) < 2**63 for e in range(3) for b in range(50))


def test_seeded_generators_come_from_the_stream_key() -> None:
    value = stream_key(5, 2, Stream.ERASE, 17)
    assert py_rng(5, 2, Stream.ERASE, 17).random() == random.Random(value).random()
    words = np.array([value & 0xFFFFFFFF, value >> 32], dtype=np.uint32)
    want = np.random.RandomState(words).standard_normal(4)
    np.testing.assert_array_equal(np_rng(5, 2, Stream.ERASE, 17).standard_normal(4), want)


def _bare_stream_literals(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Call) or len(node.args) < 3:
            continue
        name = getattr(node.func, "id", getattr(node.func, "attr", None))
        if name in STREAM_USERS and isinstance(node.args[2], ast.Constant):
            found.append(f"{path.relative_to(REPO)}:{node.lineno}")
    return found


def test_no_stream_is_named_by_a_bare_number() -> None:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.py"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    sources = [REPO / p for p in listed if (REPO / p).is_file() and p != "data/streams.py"]
    offenders = [hit for path in sources for hit in _bare_stream_literals(path)]
    assert offenders == [], f"use data.streams.Stream, not a number: {offenders}"
