"""One build at a time per ``--out`` (issue 19, item 4): a second build is refused at once in one line
naming the build that holds the folder, or waits with ``--wait``; the lock a killed build leaves is
noticed and taken over.  The lock is ``flock`` on ``.NAME.lock`` beside the index folder."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from musicidx.cli import cli
from musicidx.indexer.destination import IndexBusyError, index_lock, lock_path

TESTS = Path(__file__).resolve().parent


def _build_args(corpus: Path, out: Path, *more: str) -> list[str]:
    return ["build", str(corpus), "--out", str(out), "--workers", "1", "--no-cache", *more]


def _start_build(corpus: Path, out: Path) -> subprocess.Popen[str]:
    """A real ``musicidx build`` process (tiny configs), returned once it holds the lock."""
    proc = subprocess.Popen(
        [sys.executable, str(TESTS / "tiny_cli.py"), *_build_args(corpus, out)],
        cwd=TESTS,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if json.loads(lock_path(out).read_text() or "null")["pid"] == proc.pid:
                return proc
        except (OSError, ValueError, TypeError):
            pass
        if proc.poll() is not None:
            pytest.fail(f"the first build ended before taking the lock: {proc.communicate()}")
        time.sleep(0.05)
    proc.kill()
    pytest.fail("the first build did not take the lock within 60 s")


def test_a_held_lock_refuses_a_second_holder_at_once_and_is_released(tmp_path: Path) -> None:
    out = tmp_path / "idx"
    with index_lock(out) as held:
        assert json.loads(lock_path(out).read_text())["pid"] == os.getpid() and held.taken_over is None
        with pytest.raises(IndexBusyError, match=rf"another musicidx build or add is writing this index \(pid "
                           rf"{os.getpid()} on host {socket.gethostname()}, started 20"):  # fmt: skip
            index_lock(out).__enter__()
    assert not lock_path(out).exists()  # released: nothing left beside the index
    with index_lock(out):  # and free again
        pass


@pytest.mark.slow  # two musicidx processes, one of them a whole build
@pytest.mark.fluidsynth
def test_two_concurrent_builds_exactly_one_succeeds(corpus_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "idx"
    first = _start_build(corpus_dir, out)
    began = time.monotonic()
    second = subprocess.run(
        [sys.executable, str(TESTS / "tiny_cli.py"), *_build_args(corpus_dir, out)],
        cwd=TESTS,
        capture_output=True,
        text=True,
        timeout=60,
    )
    took = time.monotonic() - began
    stdout, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr
    assert second.returncode == 1 and second.stdout == "" and took < 5.0, (took, second.stderr)
    (line,) = second.stderr.splitlines()
    assert line.startswith(
        f"musicidx: error: {out}: another musicidx build or add is writing this index (pid {first.pid} on host "
        f"{socket.gethostname()}, started "
    )
    assert line.endswith("try again when it is done, or pass --wait to wait for it")
    assert json.loads((out / "manifest.json").read_text())["counts"]["tracks"] == 12
    assert not lock_path(out).exists()


@pytest.mark.fluidsynth
def test_the_lock_of_a_killed_build_is_taken_over(corpus_dir: Path, tmp_path: Path, tiny_cli_defaults: None) -> None:
    out = tmp_path / "idx"
    killed = _start_build(corpus_dir, out)
    killed.send_signal(signal.SIGKILL)
    killed.communicate()
    assert json.loads(lock_path(out).read_text())["pid"] == killed.pid  # left behind
    r = CliRunner().invoke(cli, _build_args(corpus_dir, out))
    assert r.exit_code == 0, r.output
    (note,) = [ln for ln in r.stdout.splitlines() if ln.startswith("lock ")]
    assert note.startswith(f"lock         took over the lock a killed build left (pid {killed.pid} on host ")
    assert (out / "manifest.json").is_file() and not lock_path(out).exists()


@pytest.mark.fluidsynth
def test_wait_waits_for_the_build_holding_the_lock(corpus_dir: Path, tmp_path: Path, tiny_cli_defaults: None) -> None:
    out = tmp_path / "idx"
    holder = index_lock(out).__enter__()
    threading.Timer(2.0, holder.__exit__, args=(None, None, None)).start()
    began = time.monotonic()
    refused = CliRunner().invoke(cli, _build_args(corpus_dir, out))
    assert refused.exit_code == 1 and "pass --wait" in refused.stderr and time.monotonic() - began < 2.0
    r = CliRunner().invoke(cli, _build_args(corpus_dir, out, "--wait"))
    assert r.exit_code == 0, r.output
    assert time.monotonic() - began >= 2.0 and (out / "manifest.json").is_file()
    assert "--wait" in CliRunner().invoke(cli, ["build", "--help"]).stdout
