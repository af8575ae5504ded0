"""`musicidx build --ray`: the feature and embedding stages on a local Ray cluster that these
tests start themselves (2 CPUs, on the loopback address) and tear down afterwards.

The Ray build must give the local build's features bit for bit and the same index; a worker
killed in the middle of the feature stage must still leave a complete index; a bad file is a
row in the build summary, not a failed build."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import midi_factory
import numpy as np
import pytest

pytestmark = [pytest.mark.fluidsynth, pytest.mark.slow]

ray = pytest.importorskip("ray", reason="the 'ray' extra is not installed (pip install 'musicidx[ray]')")


def test_an_unreachable_address_fails_in_one_line(corpus: Path, tmp_path: Path) -> None:
    """Checked before Ray is asked (Ray itself would wait for minutes); nothing is written.
    First in the module: the other tests keep a cluster connected in this process."""
    import socket

    from click.testing import CliRunner

    from musicidx.cli import cli

    with socket.socket() as s:  # a port on loopback that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    if ray.is_initialized():
        pytest.skip("this process is connected to a Ray cluster already")
    r = CliRunner().invoke(cli, ["build", str(corpus), "--out", str(tmp_path / "idx"), "--ray", f"127.0.0.1:{port}"])
    assert r.exit_code == 1
    assert r.stderr.strip().splitlines() == [
        f"musicidx: error: cannot reach a Ray cluster at 127.0.0.1:{port} (Connection refused); start one with "
        "'ray start --head' and pass the address it prints, or use --ray auto"
    ]
    assert not (tmp_path / "idx").exists()


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    """A 2-CPU Ray cluster on 127.0.0.1 for this module; the builds join it (--ray auto)."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny corpus plus one file that is not MIDI."""
    root = tmp_path_factory.mktemp("raycorpus")
    midi_factory.write_corpus(root, np.random.default_rng(7))
    (root / "Alpha" / "broken.mid").write_bytes(b"this is not a MIDI file")
    return root


def _cache_entries(cache: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(cache.glob("features-v*/*/*.npz"))}


def _index_arrays(path: Path) -> tuple[np.ndarray, Any, dict[str, Any]]:
    from musicidx.indexer.format import read_index

    c = read_index(path)
    return c.faiss_index.reconstruct_n(0, c.faiss_index.ntotal), c.clips, c.encoder_state


def _same_index(a: Path, b: Path) -> None:
    va, ca, sa = _index_arrays(a)
    vb, cb, sb = _index_arrays(b)
    assert np.array_equal(va, vb)  # bit for bit
    assert ca.equals(cb)
    assert sa.keys() == sb.keys() and all(np.array_equal(sa[k].numpy(), sb[k].numpy()) for k in sa)


def test_ray_build_equals_local_build_bit_for_bit(
    cluster: None, corpus: Path, tmp_path: Path, build_tiny: Callable[..., Any]
) -> None:
    local = build_tiny(corpus, tmp_path / "local", tmp_path / "cache-local", workers=2)
    dist = build_tiny(corpus, tmp_path / "ray", tmp_path / "cache-ray", ray="auto")

    assert dist.cluster is not None and "2 CPUs" in dist.cluster
    entries_local, entries_ray = _cache_entries(tmp_path / "cache-local"), _cache_entries(tmp_path / "cache-ray")
    assert len(entries_local) == 12 and entries_local.keys() == entries_ray.keys()
    for name in entries_local:  # the same features, read back from each cache
        with np.load(_find(tmp_path / "cache-local", name)) as x:
            with np.load(_find(tmp_path / "cache-ray", name)) as y:
                assert np.array_equal(x["feats"], y["feats"]) and np.array_equal(x["starts"], y["starts"])
    _same_index(tmp_path / "local", tmp_path / "ray")
    assert dist.fit.n_clips == local.fit.n_clips == 36
    # the bad file: reported the same way by both, and no build failed for it
    assert dist.skipped == local.skipped == [("Alpha/broken.mid", "not a MIDI file (no 'MThd' header)")]
    manifest = json.loads((tmp_path / "ray" / "manifest.json").read_text())
    assert manifest["ray"] == {"nodes": 1, "cpus": 2, "started_locally": False}
    assert manifest["skipped"] == [{"path": "Alpha/broken.mid", "reason": "not a MIDI file (no 'MThd' header)"}]


def _find(cache: Path, name: str) -> Path:
    return next(cache.glob(f"features-v*/*/{name}"))


def _feature_workers() -> list[int]:
    """PIDs of the Ray actors of the feature stage (Ray names the process after the actor)."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes()
            except OSError:
                continue
            if b"_FeatureWorker" in cmd:
                pids.append(int(d.name))
    return pids


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the worker to kill through /proc (Linux)")
def test_a_worker_killed_mid_build_loses_no_clip(
    cluster: None, tmp_path: Path, build_tiny: Callable[..., Any], features: Any
) -> None:
    """SIGKILL one feature worker once the first files are in the cache: Ray restarts it and
    retries its file; the index is complete, with every clip once, as in a local build."""
    from musicidx.indexer.format import read_index

    src = tmp_path / "corpus"
    for i in range(4):  # 4 x 12 files of 5 s: the feature stage lasts a few seconds on 2 workers
        midi_factory.write_corpus(src / f"set{i}", np.random.default_rng(100 + i))
    # flatten to <Composer>/*.mid
    for p in sorted(src.glob("set*/*/*.mid")):
        dest = src / p.parent.name / f"{p.parent.parent.name} {p.name}"
        dest.parent.mkdir(exist_ok=True)
        p.rename(dest)
    for d in sorted(src.glob("set*"), reverse=True):
        for sub in d.iterdir():
            sub.rmdir()
        d.rmdir()
    total = len(list(src.glob("*/*.mid")))
    cache = tmp_path / "cache-ray"
    killed: dict[str, int] = {}

    def killer() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            done = len(list(cache.glob("features-v*/*/*.npz")))
            pids = _feature_workers()
            if done >= 2 and pids:
                os.kill(pids[0], signal.SIGKILL)
                killed.update(pid=pids[0], done_before=done)
                return
            time.sleep(0.01)

    watcher = threading.Thread(target=killer, daemon=True)
    watcher.start()
    dist = build_tiny(src, tmp_path / "ray", cache, ray="auto")
    watcher.join(timeout=5)

    assert killed, "the feature stage ended before a worker could be killed"
    assert killed["done_before"] < total, "the kill landed after every file was done"
    assert dist.skipped == [] and dist.fit.n_tracks == total
    contents = read_index(tmp_path / "ray")  # complete and consistent (ntotal == rows, ...)
    rows = contents.clips.select(["path", "start_s"]).to_pylist()
    assert len(rows) == len({(r["path"], r["start_s"]) for r in rows})  # no clip twice
    local = build_tiny(src, tmp_path / "local", tmp_path / "cache-local", workers=2)
    assert local.fit.n_clips == dist.fit.n_clips
    _same_index(tmp_path / "local", tmp_path / "ray")


def test_cli_build_with_ray_reports_the_cluster(
    cluster: None, corpus: Path, tmp_path: Path, tiny_cli_defaults: None
) -> None:
    from click.testing import CliRunner

    from musicidx.cli import cli

    out = tmp_path / "idx"
    r = CliRunner().invoke(cli, ["build", str(corpus), "--out", str(out), "--ray", "--json"])
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)  # stdout is the JSON report alone: nothing of Ray's on it
    assert report["ray"].startswith("the Ray cluster at auto") and report["skipped"][0]["path"] == "Alpha/broken.mid"
    r = CliRunner().invoke(cli, ["build", str(corpus), "--out", str(out), "--ray"])
    assert r.exit_code == 0, r.output
    assert "ray          features and embeddings on the Ray cluster at auto (1 node, 2 CPUs)" in r.stdout


def test_ray_needs_the_feature_cache(
    cluster: None, corpus: Path, tmp_path: Path, build_tiny: Callable[..., Any]
) -> None:
    from musicidx.encoder.errors import MusicIdxError

    with pytest.raises(MusicIdxError, match="--ray needs the feature cache"):
        build_tiny(corpus, tmp_path / "idx", None, ray="auto")
    assert not (tmp_path / "idx").exists()


def test_the_cache_is_shared_with_local_builds_and_reruns_do_only_what_is_missing(
    cluster: None, corpus: Path, tmp_path: Path, build_tiny: Callable[..., Any]
) -> None:
    cache = tmp_path / "cache"
    first = build_tiny(corpus, tmp_path / "a", cache, ray="auto")
    assert first.cached_tracks == 0 and first.rendered_seconds > 0
    local = build_tiny(corpus, tmp_path / "b", cache, workers=2)  # the local path reuses the cluster's work
    assert local.cached_tracks == 12 and local.rendered_seconds == 0
    entries = sorted(cache.glob("features-v*/*/*.npz"))
    for p in entries[:2]:  # as if the build had died with two files left
        p.unlink()
    again = build_tiny(corpus, tmp_path / "c", cache, ray="auto")
    assert again.cached_tracks == 10 and 0 < again.rendered_seconds < first.rendered_seconds
    _same_index(tmp_path / "a", tmp_path / "c")
