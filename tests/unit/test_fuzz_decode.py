"""A bounded, deterministic fuzz run of the decode path (bench/fuzz_decode.py runs
the long, coverage-guided one).

Valid seed files of every supported container are mutated (bit flips, interesting
bytes, truncations, splices of two seeds, insertions, deletions, repeats and
header field edits: tests.support.hostile.mutate) and fed to ``load_media`` and
``hash_loaded``. The only assertion is the contract: each input returns, or raises
InvalidInput; never another exception, never a hang (a per-input alarm, and a
watchdog that kills the run if native code ignores the alarm).
"""

from __future__ import annotations

import faulthandler
import signal
import sys
import time
from collections import Counter
from collections.abc import Iterator
from types import FrameType

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from moderation.errors import InvalidInput
from moderation.hashing import video
from moderation.media.load import Media, MediaLimits, load_media
from moderation.pipeline import hash_loaded
from tests.support.hostile import MUTATIONS, mutate, seed_files

EXAMPLES = 6000  # about 12 s on two cores
INPUT_TIMEOUT_S = 5  # one input; the slowest seen takes well under 0.5 s
WATCHDOG_S = 60  # native code that ignores the alarm: the process is killed with a traceback
LIMITS = MediaLimits()
SEEDS = seed_files()
NAMES = sorted(SEEDS)
outcomes: Counter[str] = Counter()

ops = st.lists(
    st.tuples(st.sampled_from(MUTATIONS), st.integers(0, 1 << 24), st.integers(0, 1 << 24)),
    min_size=1,
    max_size=5,
)


class InputTimeout(Exception):
    pass


def _alarm(_signum: int, _frame: FrameType | None) -> None:
    raise InputTimeout(f"an input ran over {INPUT_TIMEOUT_S} s")


@pytest.fixture
def guarded(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # vpdq runs in a child process with its own limits; a process per video input
    # would dominate the budget, so videos are hashed by OpenCV here.
    monkeypatch.setattr(video, "vpdq_available", lambda: False)
    previous = signal.signal(signal.SIGALRM, _alarm)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        faulthandler.cancel_dump_traceback_later()


@settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)
@given(seed=st.sampled_from(NAMES), other=st.sampled_from(NAMES), mutations=ops)
def test_mutated_files_load_or_raise_invalid_input(
    guarded: None, seed: str, other: str, mutations: list[tuple[str, int, int]]
) -> None:
    data = mutate(SEEDS[seed], SEEDS[other], mutations)
    faulthandler.dump_traceback_later(WATCHDOG_S, exit=True, file=sys.stderr)
    signal.alarm(INPUT_TIMEOUT_S)
    started = time.perf_counter()
    try:
        media = load_media(data, LIMITS)
        assert isinstance(media, Media) and media.pictures
        hash_loaded(data, media, LIMITS, variants=False)
        outcomes[f"ok {media.kind}"] += 1
    except InvalidInput as exc:
        assert str(exc)
        outcomes[exc.code] += 1
    finally:
        signal.alarm(0)
        faulthandler.cancel_dump_traceback_later()
    assert time.perf_counter() - started < INPUT_TIMEOUT_S


def test_the_fuzz_run_reached_both_outcomes() -> None:
    """Runs after the fuzz test (same module, file order): mutations must keep
    some files decodable, or the run only exercised the header checks."""
    if sum(outcomes.values()) < EXAMPLES // 2:
        pytest.skip("the fuzz test did not run first")
    assert outcomes["media_undecodable"] > 0
    assert sum(n for k, n in outcomes.items() if k.startswith("ok ")) > EXAMPLES // 20, outcomes
