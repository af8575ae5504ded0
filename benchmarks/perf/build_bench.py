"""Cold and warm `musicidx build` wall times, and the seed-style preprocessing they replace.

Cold: an empty cache (features and trained encoders), so every clip is rendered, every CQT
computed and the encoder trained. Warm: the same build again with that cache. Seed-style: what
the seed project did before any training — the FluidSynth command line rendering every whole
track to a 44.1 kHz WAV, one file after another in one process — timed on the same files in the
same run.

    python -m benchmarks.perf.build_bench [--corpus ../shared/data/musicians] [--repeats 3] [--seed-style]

Prints one line per run and a JSON summary (medians) at the end; --json-out writes it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.paths import add_corpus_argument


def musicidx_cmd() -> list[str]:
    exe = Path(sys.executable).with_name("musicidx")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "musicidx"]


def timed_build(corpus: Path, out: Path, cache: Path) -> tuple[float, dict]:
    env = {**os.environ, "XDG_CACHE_HOME": str(cache)}
    t = time.perf_counter()
    proc = subprocess.run(
        [*musicidx_cmd(), "build", str(corpus), "--out", str(out), "--json"], env=env, capture_output=True, text=True
    )
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        sys.exit(f"build failed: {proc.stderr.strip().splitlines()[-1:]}")
    return wall, json.loads(proc.stdout)


def seed_style(corpus: Path, soundfont: str) -> tuple[float, int]:
    """fluidsynth -ni -F out.wav -r 44100 SF2 file.mid for each file, one process at a time."""
    exe = shutil.which("fluidsynth")
    if exe is None:
        sys.exit("the FluidSynth command line is needed for --seed-style (apt-get install fluidsynth)")
    files = sorted(corpus.glob("*/*.mid"))
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        for i, f in enumerate(files):
            subprocess.run(
                [exe, "-ni", "-F", f"{tmp}/{i}.wav", "-r", "44100", soundfont, str(f)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                check=False,
            )
            os.unlink(f"{tmp}/{i}.wav") if os.path.exists(f"{tmp}/{i}.wav") else None
        return time.perf_counter() - t, len(files)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_corpus_argument(ap)
    ap.add_argument("--repeats", type=int, default=3, help="cold and warm builds each (median reported)")
    ap.add_argument("--seed-style", action="store_true", help="also time the seed-style preprocessing, once")
    ap.add_argument("--json-out", type=Path)
    args = ap.parse_args()
    if not args.corpus.is_dir():
        sys.exit(f"{args.corpus}: corpus not found (the challenge data lives in ../shared/data)")

    cold, warm, last = [], [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            cache = Path(tmp) / f"cache{r}"
            wall, last = timed_build(args.corpus, Path(tmp) / "idx", cache)
            cold.append(wall)
            print(
                f"cold build {r + 1}: {wall:.1f} s  ({last['tracks']} tracks, {last['clips']} clips, "
                f"{last['rendered_seconds'] / 60:.1f} min of audio rendered, stages {last['seconds']})",
                flush=True,
            )
            wall, info = timed_build(args.corpus, Path(tmp) / "idx", cache)
            warm.append(wall)
            print(f"warm build {r + 1}: {wall:.1f} s  ({info['cached_tracks']} tracks from cache)", flush=True)
            shutil.rmtree(cache, ignore_errors=True)
    summary = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "corpus": str(args.corpus),
        "tracks": last.get("tracks"),
        "clips": last.get("clips"),
        "rendered_audio_seconds": last.get("rendered_seconds"),
        "cold_build_s": cold,
        "cold_build_median_s": statistics.median(cold),
        "warm_build_s": warm,
        "warm_build_median_s": statistics.median(warm),
    }
    if args.seed_style:
        from musicidx.encoder.soundfont import find_soundfont

        sf = str(find_soundfont().path)
        wall, n = seed_style(args.corpus, sf)
        summary.update(
            seed_style_s=wall,
            seed_style_files=n,
            seed_style_soundfont=sf,
            speedup_cold_vs_seed=wall / statistics.median(cold),
        )
        print(
            f"seed-style preprocessing: {wall:.1f} s for {n} files with {Path(sf).name} "
            f"-> cold build is {wall / statistics.median(cold):.1f}x faster",
            flush=True,
        )
    print(json.dumps(summary, indent=2))
    if args.json_out:
        args.json_out.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
