"""Stage 2 of ``musicidx pretrain``: every passage in several renderings ("views").

For each exported piece, ``clips_per_piece`` windows are chosen as a build chooses them
(:func:`~musicidx.encoder.render.clip_starts`), and each window is rendered ``views`` times, each
view with its own SoundFont, orchestration, transposition and tempo, drawn from a generator seeded
by the piece's sha256 and the view number, so every run draws the same renderings. The audio
itself is not bit-identical from run to run: each worker keeps one synthesiser per SoundFont
open (a compressed ``.sf3`` takes ~16 s to load), and FluidSynth's state carries a little from
one piece to the next. The log-CQT of every view is stored in
``WORK/views/<sha256[:2]>/<sha256>-<recipe digest>.npz`` as float16 ``(views, clips, bins,
frames)``; a piece already there is not rendered again, so a killed run resumes.
"""

from __future__ import annotations

import copy
import json
import os
import tempfile
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..config import FeatureConfig
from ..errors import MusicIdxError
from ..runtime import Progress, set_torch_threads
from .config import PretrainConfig, PretrainError, ViewSpec
from .corpus import write_json

_SOUNDFONT_DIRS = ("/usr/share/sounds/sf2", "/usr/share/sounds/sf3", "/usr/share/soundfonts")


def resolve_soundfonts(names: Sequence[str]) -> list[Any]:
    """The recipe's SoundFonts by file name, looked up in the system's SoundFont folders (and
    pretty_midi's bundled TimGM6mb); :class:`PretrainError` naming the missing ones and the
    Debian packages that ship them."""
    from ..soundfont import SoundFont, bundled_soundfont, soundfont_sha256

    found, missing = [], []
    for name in names:
        candidates = [Path(d) / name for d in _SOUNDFONT_DIRS] + [bundled_soundfont()]
        path = next((p for p in candidates if p.name == name and p.is_file()), None)
        if path is None:
            missing.append(name)
        else:
            found.append(SoundFont(path.resolve(), soundfont_sha256(path)))
    if missing:
        raise PretrainError(
            f"SoundFont(s) {missing} not found in {', '.join(_SOUNDFONT_DIRS)}; on Debian: apt-get install "
            "fluid-soundfont-gm musescore-general-soundfont-small timgm6mb-soundfont"
        )
    return found


@dataclass(frozen=True)
class ViewParams:
    soundfont: int  # index into the recipe's SoundFonts
    orchestration: str
    transpose: int
    tempo: float  # playback speed: > 1 faster


def view_params(sha256: str, view: int, spec: ViewSpec) -> ViewParams:
    """The rendering of view ``view`` of the piece ``sha256``: fixed by both and the recipe's seed."""
    rng = np.random.default_rng([int(sha256[:16], 16), view, spec.seed])
    return ViewParams(
        soundfont=int(rng.integers(len(spec.soundfonts))),
        orchestration=str(spec.orchestrations[int(rng.integers(len(spec.orchestrations)))]),
        transpose=int(rng.integers(-spec.max_transpose, spec.max_transpose + 1)),
        tempo=float(1.0 + rng.uniform(-spec.tempo_jitter, spec.tempo_jitter)),
    )


def transformed(pm: Any, p: ViewParams, *, key: str, view: int) -> Any:
    """``pm`` orchestrated, transposed and played at ``p.tempo`` times the speed (a new object)."""
    from ..orchestration import orchestrate

    out = orchestrate(pm, p.orchestration, key=key, seed=view) if p.orchestration != "as_written" else pm
    out = copy.deepcopy(out)
    scale = 1.0 / p.tempo
    for inst in out.instruments:
        for n in inst.notes:
            n.start, n.end = n.start * scale, n.end * scale
            if not inst.is_drum:
                n.pitch = int(min(127, max(0, n.pitch + p.transpose)))
        for c in inst.control_changes:
            c.time *= scale
        for b in inst.pitch_bends:
            b.time *= scale
    return out


def render_views(
    path: Path, sha256: str, spec: ViewSpec, features: FeatureConfig, soundfonts: Sequence[Any], synths: Sequence[Any]
) -> dict[str, Any]:
    """``(views, clips, bins, frames)`` float16 log-CQT of one piece, its window starts and the
    parameters of every view; ``synths[i]`` is an open synthesiser of ``soundfonts[i]``."""
    from ..frontend import cqt_features
    from ..midi import load_midi
    from ..render import clip_starts, render_clips

    pm = load_midi(path)
    starts = clip_starts(pm, replace(features, clips_per_track=spec.clips_per_piece))
    out, params = [], []
    for v in range(spec.views):
        p = view_params(sha256, v, spec)
        score = transformed(pm, p, key=sha256, view=v)
        clips = render_clips(
            score,
            cfg=features,
            soundfont=soundfonts[p.soundfont],
            path=path,
            starts=starts / p.tempo,
            synth=synths[p.soundfont],
        )
        out.append(cqt_features(clips.audio, features).astype(np.float16))
        params.append(p.__dict__)
    return {"feats": np.stack(out), "starts": np.asarray(starts), "params": params}


def views_path(work: Path, sha256: str, digest: str) -> Path:
    return work / "views" / sha256[:2] / f"{sha256}-{digest}.npz"


_STATE: dict[str, Any] = {}


def _init(config: PretrainConfig) -> None:
    set_torch_threads(worker=True)  # one process per core
    _STATE["config"] = config
    from ..render import Synth

    _STATE["soundfonts"] = resolve_soundfonts(config.views.soundfonts)
    # one open synthesiser per SoundFont for the worker's life: a compressed .sf3 takes ~16 s to load
    _STATE["synths"] = [Synth(sf, config.features.sample_rate) for sf in _STATE["soundfonts"]]


def _job(job: tuple[str, str, str]) -> str | None:
    """Render one piece's views into the work folder; the reason on failure."""
    path, sha, dest = job
    cfg: PretrainConfig = _STATE["config"]
    try:
        got = render_views(Path(path), sha, cfg.views, cfg.features, _STATE["soundfonts"], _STATE["synths"])
    except MusicIdxError as e:
        return str(e)
    except Exception as e:  # one bad piece must not stop the stage
        return f"{path}: {type(e).__name__}: {e}"
    d = Path(dest)
    d.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d.parent, suffix=".tmp.npz")
    with os.fdopen(fd, "wb") as f:
        np.savez(f, feats=got["feats"], starts=got["starts"], params=json.dumps(got["params"]))
    os.replace(tmp, d)
    return None


def render_corpus(
    pieces: Sequence[tuple[str, str]],
    work: Path,
    config: PretrainConfig,
    *,
    workers: int,
    progress: Progress | None = None,
) -> dict[str, str]:
    """Render the views of every ``(midi path, sha256)`` not yet in ``WORK/views``; returns the
    reason of every piece that failed (recorded in ``WORK/views/failed-<digest>.json``, not retried)."""
    digest = config.digest("views", "features")
    failed_path = work / "views" / f"failed-{digest}.json"
    try:
        failed: dict[str, str] = json.loads(failed_path.read_text())
    except (OSError, ValueError):
        failed = {}
    todo = [(p, s, str(views_path(work, s, digest))) for p, s in pieces if s not in failed]
    todo = [j for j in todo if not Path(j[2]).is_file()]
    done = len(pieces) - len(todo)
    if progress is not None:
        progress("views", done, len(pieces))
    resolve_soundfonts(config.views.soundfonts)  # fail now, not in every worker
    import multiprocessing as mp

    with ProcessPoolExecutor(
        max(1, workers), mp_context=mp.get_context("spawn"), initializer=_init, initargs=(config,)
    ) as pool:
        for (_path, sha, _dest), err in zip(todo, pool.map(_job, todo, chunksize=4)):
            done += 1
            if err is not None:
                failed[sha] = err
            if progress is not None:
                progress("views", done, len(pieces))
            if err is not None or done % 100 == 0:
                write_json(failed_path, failed)
    write_json(failed_path, failed)
    return failed
