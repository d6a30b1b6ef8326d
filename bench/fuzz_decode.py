"""Fuzz the decode path: ``load_media`` then ``hash_loaded``, on mutated seed files.

    .venv/bin/python bench/fuzz_decode.py [--seconds 180] [--engine atheris|hypothesis]
                                          [--out var/fuzz_decode] [--timeout 10] [--rss-mb 2048] [--vpdq]

The contract under test: every input either loads and hashes, or raises
InvalidInput (MediaDecodeError, MediaTooLarge, ...); anything else is a finding:
another exception, a crash of the process (a segfault or abort in a native
decoder), an input that takes over ``--timeout`` seconds, or one that grows the
process past ``--rss-mb``.

Seeds are small synthetic files of every supported container (JPEG, progressive
JPEG, PNG, GIF, animated GIF, WebP, animated WebP, BMP, TIFF, MP4, WebM) and the
hostile files of tests/support/hostile.py that stay small.

Engines: ``atheris`` (coverage-guided libFuzzer, Python code of ``moderation``
and ``PIL`` instrumented; native decoders are not, so their coverage does not
guide it) when installed, else ``hypothesis`` (the mutations of
``tests.support.hostile.mutate``: bit flips, interesting bytes, truncations,
splices of two seeds, insertions, deletions, repeats and header field edits).

The fuzzing runs in a child process, restarted after a crash: the parent saves
the input that was running (``crashes/``), reports what happened, and prints a
summary: inputs run, inputs per second, distinct outcomes (error messages with
numbers blanked) and every finding with the file it was saved to. vpdq (which
already runs in its own child process with limits) is off unless ``--vpdq``:
it would start one process per video input.
"""

from __future__ import annotations

import argparse
import faulthandler
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

STATS_EVERY_S = 1.0


# -- the child: runs inputs ------------------------------------------------------------


class Target:
    """Runs one input and keeps counts; raises for anything but InvalidInput."""

    def __init__(self, out: Path, vpdq: bool) -> None:
        from moderation.errors import InvalidInput
        from moderation.hashing import video
        from moderation.media.load import MediaLimits

        if not vpdq:
            video.vpdq_available = lambda: False  # type: ignore[assignment]
        self.invalid = InvalidInput
        self.limits = MediaLimits()
        self.out = out
        self.current = out / "current.bin"
        self.stats = out / f"stats-{os.getpid()}.json"
        self.runs = 0
        self.outcomes: Counter[str] = Counter()
        self.last_write = 0.0

    def run(self, data: bytes) -> None:
        from moderation.media.load import load_media
        from moderation.pipeline import hash_loaded

        self.current.write_bytes(data)  # the parent keeps it if this process dies
        self.runs += 1
        try:
            media = load_media(data, self.limits)
            hash_loaded(data, media, self.limits, variants=False)
            outcome = f"ok {media.kind} {media.content_type}"
        except self.invalid as exc:
            outcome = f"{type(exc).__name__}: {_normalise(str(exc))}"
        self.outcomes[outcome] += 1
        now = time.monotonic()
        if now - self.last_write >= STATS_EVERY_S:
            self.write_stats()
            self.last_write = now

    def write_stats(self) -> None:
        tmp = self.stats.with_suffix(".tmp")
        tmp.write_text(json.dumps({"runs": self.runs, "outcomes": dict(self.outcomes)}))
        tmp.replace(self.stats)


def _normalise(message: str) -> str:
    message = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", message)  # quoted bytes from the input
    message = re.sub(r"0x[0-9a-f]+|\d+", "N", message)
    return message[:90]


def seeds() -> dict[str, bytes]:
    from tests.support import hostile

    files = dict(hostile.seed_files())
    files.update(
        {
            "png_60000": hostile.png_with_size(60000, 60000),
            "jpeg_progressive_13000": hostile.jpeg_with_size(13000, 13000, progressive=True),
            "jpeg_scans": hostile.jpeg_scan_bomb(512, 512, 80),
            "gif_frames": hostile.gif_bomb((64, 64), (64, 64), 40),
            "webp_vp8x": hostile.webp_vp8x_with_size(7000, 7000),
            "tiff_tiled": hostile.tiff_with_size(64, 64, tile=(16, 16)),
            "tiff_pages": hostile.tiff_with_size(64, 64, pages=3),
            "jpeg_exif": hostile.jpeg_with_app_segments(0xE1, hostile.huge_exif(300), 1),
            "jpeg_zip": hostile.jpeg_zip_polyglot(),
            "png_exif": hostile.png_with_chunk(b"eXIf", hostile.huge_exif(50)[6:]),
        }
    )
    return files


def child_atheris(out: Path, seconds: float, timeout: int, rss_mb: int, vpdq: bool) -> None:
    import atheris

    faulthandler.enable()  # a native crash prints the Python stack; the parent keeps the input

    with atheris.instrument_imports(include=["moderation", "PIL"]):
        from moderation.hashing import video  # noqa: F401
        from moderation.media import decode, load  # noqa: F401
        from moderation.pipeline import hash_loaded  # noqa: F401

    target = Target(out, vpdq)
    deadline = time.monotonic() + seconds

    def one_input(data: bytes) -> None:
        target.run(data)
        if time.monotonic() > deadline:
            target.write_stats()

    argv = [
        sys.argv[0],
        str(out / "corpus"),
        f"-max_total_time={max(1, int(seconds))}",
        f"-timeout={timeout}",
        f"-rss_limit_mb={rss_mb}",
        f"-artifact_prefix={out / 'crashes'}/",
        "-max_len=131072",
        "-print_final_stats=1",
        # Signals are left to faulthandler (a Python stack beats libFuzzer's "deadly signal").
        *(f"-handle_{sig}=0" for sig in ("segv", "bus", "abrt", "ill", "fpe")),
    ]
    atheris.Setup(argv, one_input)
    atheris.Fuzz()


def child_hypothesis(out: Path, seconds: float, vpdq: bool) -> None:
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import strategies as st

    from tests.support.hostile import MUTATIONS, mutate

    faulthandler.enable()
    target = Target(out, vpdq)
    files = seeds()
    names = sorted(files)
    deadline = time.monotonic() + seconds
    ops = st.lists(
        st.tuples(st.sampled_from(MUTATIONS), st.integers(0, 1 << 24), st.integers(0, 1 << 24)),
        min_size=1,
        max_size=6,
    )

    @settings(
        max_examples=10**9,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(st.sampled_from(names), st.sampled_from(names), ops)
    def fuzz(name: str, other: str, mutations: list[tuple[str, int, int]]) -> None:
        if time.monotonic() > deadline:
            raise _TimeUp
        target.run(mutate(files[name], files[other], mutations))

    try:
        fuzz()
    except _TimeUp:
        pass
    target.write_stats()


class _TimeUp(Exception):
    pass


# -- the parent: restarts the child, keeps findings, reports ------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=180.0)
    ap.add_argument("--engine", choices=["atheris", "hypothesis"], default=None)
    ap.add_argument("--out", type=Path, default=ROOT / "var" / "fuzz_decode")
    ap.add_argument("--timeout", type=int, default=10, help="seconds one input may take")
    ap.add_argument("--rss-mb", type=int, default=2048)
    ap.add_argument("--vpdq", action="store_true", help="also hash videos with vpdq (a process per video)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    engine = args.engine or ("atheris" if _have_atheris() else "hypothesis")
    out: Path = args.out
    if args.child:
        if engine == "atheris":
            child_atheris(out, args.seconds, args.timeout, args.rss_mb, args.vpdq)
        else:
            child_hypothesis(out, args.seconds, args.vpdq)
        return 0

    if out.exists():
        shutil.rmtree(out)
    (out / "corpus").mkdir(parents=True)
    (out / "crashes").mkdir()
    for name, data in seeds().items():
        (out / "corpus" / name).write_bytes(data)
    version = _atheris_version() if engine == "atheris" else _hypothesis_version()
    print(f"engine: {engine} {version}; {args.seconds:.0f} s; findings in {out / 'crashes'}", file=sys.stderr)

    started = time.monotonic()
    findings: list[str] = []
    restarts = 0
    while (left := args.seconds - (time.monotonic() - started)) > 1:
        finding = _run_child(args, engine, out, left)
        if finding is None:
            break
        findings.append(finding)
        restarts += 1
        if restarts > 50:
            findings.append("gave up after 50 restarts")
            break
    elapsed = time.monotonic() - started
    _report(out, engine, version, elapsed, findings)
    return 1 if findings or any((out / "crashes").iterdir()) else 0


def _run_child(args: Any, engine: str, out: Path, seconds: float) -> str | None:
    """Run the child for ``seconds``; None when it ran out its time, else what went wrong."""
    argv = [sys.executable, __file__, "--child", "--engine", engine, "--out", str(out)]
    argv += ["--seconds", str(seconds), "--timeout", str(args.timeout), "--rss-mb", str(args.rss_mb)]
    if args.vpdq:
        argv.append("--vpdq")
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OPENCV_LOG_LEVEL": "FATAL", "AV_LOG_FORCE_NOCOLOR": "1"}
    log = (out / "child.log").open("ab")
    current = out / "current.bin"
    with log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        limit = time.monotonic() + seconds + 30
        while proc.poll() is None:
            time.sleep(0.5)
            stuck = current.exists() and time.time() - current.stat().st_mtime > args.timeout + 5
            if stuck or time.monotonic() > limit:
                proc.kill()
                proc.wait()
                return _keep(out, "timeout", f"an input ran over {args.timeout} s (killed)")
    if proc.returncode == 0:
        return None
    if proc.returncode < 0:
        return _keep(out, "crash", f"child killed by {signal.Signals(-proc.returncode).name}")
    return _keep(out, "crash", f"child exited with status {proc.returncode}")


def _keep(out: Path, kind: str, what: str) -> str:
    current = out / "current.bin"
    if not current.exists():
        return what
    data = current.read_bytes()
    path = out / "crashes" / f"{kind}-{hashlib.sha1(data).hexdigest()}.bin"
    path.write_bytes(data)
    current.unlink()
    return f"{what}: input saved to {path}"


def _report(out: Path, engine: str, version: str, elapsed: float, findings: list[str]) -> None:
    runs = 0
    outcomes: Counter[str] = Counter()
    for stats in out.glob("stats-*.json"):
        data = json.loads(stats.read_text())
        runs += data["runs"]
        outcomes.update(data["outcomes"])
    log = (out / "child.log").read_text(errors="replace") if (out / "child.log").exists() else ""
    executed = sum(int(n) for n in re.findall(r"stat::number_of_executed_units: (\d+)", log))
    artifacts = sorted(p.name for p in (out / "crashes").iterdir())
    print(f"engine            {engine} {version}")
    print(f"time              {elapsed:.0f} s")
    print(f"inputs run        {runs}" + (f" (libFuzzer counted {executed})" if executed else ""))
    print(f"inputs per second {runs / max(elapsed, 1e-9):.0f}")
    print(f"distinct outcomes {len(outcomes)}")
    for outcome, count in outcomes.most_common():
        print(f"  {count:>8}  {outcome}")
    print(f"findings          {len(findings) + len(artifacts)}")
    for finding in findings:
        print(f"  {finding}")
    for name in artifacts:
        print(f"  {out / 'crashes' / name}")
    for block in re.findall(
        r"(?:=== Uncaught Python exception: ===|Fatal Python error).*?(?=\nINFO|\Z)", log, flags=re.S
    )[:5]:
        print(block[:2000])


def _have_atheris() -> bool:
    try:
        import atheris  # noqa: F401
    except ImportError:
        return False
    return True


def _atheris_version() -> str:
    from importlib.metadata import version

    return version("atheris")


def _hypothesis_version() -> str:
    from importlib.metadata import version

    return version("hypothesis")


if __name__ == "__main__":
    sys.exit(main())
