"""The build's two parallel stages on a Ray cluster (``musicidx build --ray``; extra ``musicidx[ray]``).

Only this module imports Ray, and only :func:`ray_session` starts it, so a build without
``--ray`` never loads it.  The stages are Ray Data pipelines:

1. **features**: the list of files not yet in the feature cache → ``map_batches`` over an actor
   pool (one CPU each, one file per batch).  Each worker writes the file's features into the same
   content-addressed cache as a local build and returns only a status row (the file's index, the
   seconds it rendered, or the error that made it unusable); the driver then reads the features
   from the cache.  A re-run after a failure therefore does only the files still missing, and a
   local build reuses what the cluster computed.  The cache folder must be one every node reaches
   at the same path (a shared file system) — checked: a worker's write the driver cannot read is
   an error naming the folder.
2. **embedding**: after training on the driver, the clips to index are cut into the same batches
   of 64 that the local build embeds, and an actor pool embeds them with the trained weights,
   using as many torch threads per actor as the driver uses, so the vectors are bit for bit the
   local build's on the same machine.

Fault tolerance is Ray's: a worker process that dies is restarted and its unfinished batch
retried (``max_restarts`` / ``max_task_retries``), and because every result is keyed by the file's
index and written atomically under a content key, a retried batch can neither lose nor duplicate
a clip.  A file that kills its worker every time is reported as unusable after the retries,
like any bad file; it never fails the build.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from musicidx.encoder import errors as _errors
from musicidx.encoder.config import FeatureConfig
from musicidx.encoder.errors import DependencyError, MusicIdxError
from musicidx.encoder.runtime import set_torch_threads
from musicidx.encoder.soundfont import SoundFont

from .features import FeatureCache, TrackFeatures, _cached, _safe_extract, _size, cache_hits

#: How often Ray restarts a dead worker and retries its batch before the file counts as unusable.
RETRIES = 3
#: Clips per embedding batch: the local build's :func:`~musicidx.encoder.model.embed` default.
EMBED_BATCH = 64


def _import_ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401  (Ray Data ships with the 'ray[data]' extra)
    except ImportError as e:
        raise DependencyError(
            f"--ray needs Ray Data: {_errors.install_hint('ray')}, or pip install 'ray[data]', in this environment "
            "and on every node"
        ) from e
    return ray


class RaySession:
    """A connection to a Ray cluster for the length of one build."""

    def __init__(self, ray: Any, address: str, started: bool) -> None:
        self.ray = ray
        self.address = address  # what the user asked for: "auto" or an address
        self.started = started  # True when this process started a local cluster of its own

    @property
    def cpus(self) -> int:
        return int(self.ray.cluster_resources().get("CPU", 1))

    @property
    def nodes(self) -> int:
        return sum(1 for n in self.ray.nodes() if n.get("Alive"))

    def describe(self) -> str:
        where = "a local Ray cluster started for this build" if self.started else f"the Ray cluster at {self.address}"
        return f"{where} ({self.nodes} node{'s' * (self.nodes != 1)}, {self.cpus} CPUs)"

    # ------------------------------------------------------------------ stage 1: features
    def extract_many(
        self,
        paths: Sequence[str | Path],
        *,
        cfg: FeatureConfig,
        soundfont: SoundFont,
        cache_dir: str | Path | None,
        workers: int | None = None,
        variants: int = 0,
        orchestrations: Sequence[str] = (),
        on_done: Callable[[int, int], None] | None = None,
    ) -> list[TrackFeatures | MusicIdxError]:
        """Like :func:`~musicidx.indexer.features.extract_many`, with the files spread over the
        cluster; ``workers`` caps the actor pool (default: every CPU of the cluster)."""
        if cache_dir is None:
            raise MusicIdxError(
                "--ray needs the feature cache, where the workers leave their results: drop --no-cache "
                "(on a multi-node cluster pass --cache-dir on a file system every node shares)"
            )
        cache = FeatureCache(cache_dir)
        orch = tuple(orchestrations)
        results, todo = cache_hits(
            paths, cfg=cfg, soundfont=soundfont, cache=cache, variants=variants, orchestrations=orch
        )
        done = len(paths) - len(todo)
        if on_done is not None:
            on_done(done, len(paths))
        if todo:
            order = sorted(todo, key=lambda i: -_size(paths[i]))  # big files first: better balance
            size = max(1, min(workers or self.cpus, self.cpus, len(order)))
            ds = self.ray.data.from_items(
                [{"idx": i, "path": str(Path(paths[i]).resolve())} for i in order], override_num_blocks=len(order)
            )
            ds = _map(
                ds,
                _FeatureWorker,
                fn_constructor_args=(cfg, soundfont, str(cache.base), variants, orch),
                compute=self.ray.data.ActorPoolStrategy(size=size),
                num_cpus=1,
            )
            for row in ds.iter_rows():
                i = int(row["idx"])
                if results[i] is not None:  # a retried batch that had already reported: same content
                    continue
                results[i] = _result_of(row, paths[i], cache, cfg, soundfont, variants, orch)
                done += 1
                if on_done is not None:
                    on_done(done, len(paths))
        for i in todo:
            if results[i] is None:  # its batch failed RETRIES + 1 times: the file kills its worker
                results[i] = MusicIdxError(
                    f"a Ray worker died {RETRIES + 1} times while reading this file; skipped", path=paths[i]
                )
        return [r for r in results if r is not None]

    # ------------------------------------------------------------------ stage 2: embedding
    def embed(self, model: Any, feats: np.ndarray, *, threads: int) -> np.ndarray:
        """The embeddings of ``feats`` (n, bins, frames) by ``model``, computed on the cluster in
        the batches the local build uses, ``threads`` torch threads per actor."""
        if len(feats) == 0:
            return np.zeros((0, model.config.embedding_dim), dtype=np.float32)
        ray = self.ray
        cpus_per_node = max(int(n["Resources"].get("CPU", 1)) for n in ray.nodes() if n.get("Alive"))
        threads = max(1, min(threads, cpus_per_node))
        weights = ray.put((model.config, model.features, {k: v.detach().cpu() for k, v in model.state_dict().items()}))
        chunks = [ray.put(np.ascontiguousarray(feats[i : i + EMBED_BATCH])) for i in range(0, len(feats), EMBED_BATCH)]
        size = max(1, min(self.cpus // threads, len(chunks)))
        ds = ray.data.from_items([{"chunk": j} for j in range(len(chunks))], override_num_blocks=len(chunks))
        ds = _map(
            ds,
            _EmbedWorker,
            fn_constructor_args=(weights, chunks, threads),
            compute=ray.data.ActorPoolStrategy(size=size),
            num_cpus=threads,
        )
        out: dict[int, np.ndarray] = {}
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            for j, e in zip(batch["chunk"], batch["embedding"]):
                out[int(j)] = np.asarray(e, dtype=np.float32)
        missing = sorted(set(range(len(chunks))) - set(out))
        if missing:
            raise MusicIdxError(f"the Ray embedding stage lost {len(missing)} of {len(chunks)} batches")
        return np.concatenate([out[j] for j in range(len(chunks))])


def _map(ds: Any, fn: type, **kw: Any) -> Any:
    """``ds.map_batches`` over an actor pool, one row per batch, with a dead worker restarted and
    its batch retried at most :data:`RETRIES` times (Ray Data's default retries forever, which
    would spin on a file that kills its worker every time).  Ray has no named parameter for the
    retry count yet, hence the deprecated ``ray_remote_args`` (kept working until Ray 2.64;
    the extra pins below that)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated")
        return ds.map_batches(fn, batch_size=1, batch_format="numpy", max_restarts=-1, max_task_retries=RETRIES, **kw)


def _result_of(
    row: dict[str, Any],
    path: str | Path,
    cache: FeatureCache,
    cfg: FeatureConfig,
    soundfont: SoundFont,
    variants: int,
    orch: tuple[str, ...],
) -> TrackFeatures | MusicIdxError:
    """A worker's status row -> the file's features (read back from the cache) or its error."""
    if row["error"]:
        cls = getattr(_errors, str(row["error_type"]), MusicIdxError)
        if not (isinstance(cls, type) and issubclass(cls, MusicIdxError)):
            cls = MusicIdxError
        return cls(str(row["error"]), path=path)
    hit = _cached(str(row["sha256"]), cfg, soundfont, cache, variants, orch)
    if hit is None:
        return MusicIdxError(
            f"a Ray worker computed this file's features but they are not in the cache at {cache.base}: "
            "on a multi-node cluster --cache-dir must be a folder every node shares at the same path",
            path=path,
        )
    return dataclasses.replace(hit, rendered_seconds=float(row["rendered_seconds"]), cached=False)


class _FeatureWorker:
    """A Ray Data actor: files -> features in the cache, and a status row per file."""

    def __init__(
        self, cfg: FeatureConfig, soundfont: SoundFont, cache_base: str, variants: int, orch: tuple[str, ...]
    ) -> None:
        set_torch_threads(worker=True)
        self.args = (cfg, soundfont, FeatureCache(cache_base), variants, orch)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows: dict[str, list[Any]] = {k: [] for k in ("idx", "sha256", "rendered_seconds", "error", "error_type")}
        for i, path in zip(batch["idx"], batch["path"]):
            r = _safe_extract(str(path), *self.args)
            rows["idx"].append(int(i))
            if isinstance(r, MusicIdxError):
                rows["sha256"].append("")
                rows["rendered_seconds"].append(0.0)
                rows["error"].append(r.reason)
                rows["error_type"].append(type(r).__name__)
            else:
                rows["sha256"].append(r.sha256)
                rows["rendered_seconds"].append(r.rendered_seconds)
                rows["error"].append("")
                rows["error_type"].append("")
        return {
            "idx": np.array(rows["idx"], dtype=np.int64),
            "sha256": np.array(rows["sha256"], dtype=object),
            "rendered_seconds": np.array(rows["rendered_seconds"], dtype=np.float64),
            "error": np.array(rows["error"], dtype=object),
            "error_type": np.array(rows["error_type"], dtype=object),
        }


class _EmbedWorker:
    """A Ray Data actor holding the trained encoder: batch numbers -> their embeddings."""

    def __init__(self, weights: Any, chunks: list[Any], threads: int) -> None:
        import ray

        from musicidx.encoder.model import Encoder

        set_torch_threads(threads)
        model_config, feature_config, state = ray.get(weights)
        self.model = Encoder(model_config, feature_config)
        self.model.load_state_dict(state)
        self.chunks = chunks

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import ray

        from musicidx.encoder.model import embed

        ids = [int(j) for j in batch["chunk"]]
        emb = [embed(self.model, ray.get(self.chunks[j]), batch=EMBED_BATCH) for j in ids]
        return {"chunk": np.array(ids, dtype=np.int64), "embedding": np.array(emb, dtype=object)}


def _configure(ray: Any) -> None:
    """Keep Ray's progress bars and INFO lines off the terminal (stdout may be a JSON report), and
    let a batch that failed all its retries drop out instead of failing the whole stage: the
    feature stage reports its file as unusable, the embedding stage raises (see above)."""
    ctx = ray.data.DataContext.get_current()
    ctx.max_errored_blocks = -1
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    ctx.verbose_stats_logs = False
    for name in ("ray", "ray.data", "ray._private", "ray.util"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail in one line, within ``timeout`` seconds, when nothing listens at ``host:port``."""
    hostport = address.removeprefix("ray://")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        return  # not host:port; Ray reports what it makes of it
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as e:
        raise MusicIdxError(
            f"cannot reach a Ray cluster at {address} ({e.strerror or e}); start one with 'ray start --head' "
            "and pass the address it prints, or use --ray auto"
        ) from e


@contextmanager
def ray_session(address: str = "auto", *, num_cpus: int | None = None) -> Iterator[RaySession]:
    """Connect to the Ray cluster at ``address``; with ``"auto"``, to the one ``ray start`` or
    ``$RAY_ADDRESS`` names, else start a local cluster on this machine (``num_cpus``: all) for
    the length of the ``with`` block.  A cluster this process started is shut down on exit; when
    this process is already connected to one (``ray.init`` before), that one is used."""
    ray = _import_ray()
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    opts: dict[str, Any] = dict(
        include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR, configure_logging=True
    )
    already = ray.is_initialized()
    started = False
    if not already:
        if address == "auto":
            try:
                ray.init(address="auto", **opts)
            except ConnectionError:  # no running cluster: one of our own, on this machine
                # On this machine's loopback: a single-node cluster needs no other address.
                ray.init(num_cpus=num_cpus, _node_ip_address="127.0.0.1", **opts)
                started = True
        else:
            _check_reachable(address)  # Ray itself would wait minutes on a wrong address
            try:
                ray.init(address=address, **opts)
            except ConnectionError as e:
                raise MusicIdxError(
                    f"cannot reach a Ray cluster at {address} ({str(e).splitlines()[0][:160]}); start one with "
                    "'ray start --head' and pass the address it prints, or use --ray auto"
                ) from e
    _configure(ray)
    try:
        yield RaySession(ray, address, started)
    finally:
        if started:
            ray.shutdown()


def track_features_equal(a: TrackFeatures, b: TrackFeatures) -> bool:
    """Bit-for-bit equality of two files' features (the tests' and the benchmark's check)."""
    return (
        a.sha256 == b.sha256
        and a.notes_sha256 == b.notes_sha256
        and a.duration == b.duration
        and np.array_equal(a.starts, b.starts)
        and a.feats.dtype == b.feats.dtype
        and np.array_equal(a.feats, b.feats)
        and len(a.views) == len(b.views)
        and all(np.array_equal(x, y) for x, y in zip(a.views, b.views))
    )
