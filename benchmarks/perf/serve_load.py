"""A bounded load test of `musicidx serve` on loopback; it starts and stops the server itself.

    python -m benchmarks.perf.serve_load --index IDX [--modes steady,garbage,swap,overload,memory]
                                         [--requests 300] [--memory-requests 2000] [--json-out FILE]

Real MIDI: the 12 files of ``benchmarks.data.tiny_corpus`` (written to a temporary folder) and
every file of ../shared/data/test, sent in turn.  The server keeps no feature cache, so every
request renders its file: every request is an uncached file.

Modes (each a fresh server on a free 127.0.0.1 port, default options unless said):

* steady   -- concurrency 1, 4 and 16, --requests each: p50/p99 latency, throughput, errors, the
              server's memory (its RSS and its workers') before and after.  The answers of the
              concurrency-1 run are the reference every later answer for the same file must equal.
* garbage  -- concurrency 4, --requests of which 10 % are garbage (random bytes, truncated MIDI,
              no notes, text, an empty file, and an upload over the limit of a server started with
              --max-upload-mb 1): each garbage upload must get its 4xx (413 for the oversized one,
              422 for the rest), each good one its reference answer.
* swap     -- concurrency 4, --requests, with `musicidx build` rebuilding a copy of the index the
              server serves (the atomic swap) while requests run: no request may fail, and the
              server must have moved to the next index generation.
* overload -- concurrency 24 against --workers 1 --queue 2: the deliberate 503s (with Retry-After)
              and no other error.
* memory   -- concurrency 4, --memory-requests: the server's RSS every 100 requests.

Every run is bounded by its request count and a wall-clock limit (--max-seconds per mode).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.data.tiny_corpus import write_tiny_corpus
from benchmarks.paths import TEST_FOLDER, add_corpus_argument

# ----------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class Upload:
    name: str
    data: bytes
    expect: int  # the status it must get


def good_files(extra: list[Path]) -> list[Upload]:
    tiny = Path(tempfile.mkdtemp(prefix="serve-load-tiny-"))
    files = write_tiny_corpus(tiny) + sorted(p for d in extra for p in d.glob("*.mid"))
    out = [Upload(f"{p.parent.name}-{p.name}", p.read_bytes(), 200) for p in files]
    shutil.rmtree(tiny)
    return out


def garbage_files(good: bytes, rng: random.Random, limit: int) -> list[Upload]:
    import io

    import pretty_midi

    pm = pretty_midi.PrettyMIDI()
    pm.instruments.append(pretty_midi.Instrument(0))
    buf = io.BytesIO()
    pm.write(buf)
    return [
        Upload("random-bytes.mid", rng.randbytes(2000), 422),
        Upload("truncated.mid", good[: len(good) // 2], 422),
        Upload("no-notes.mid", buf.getvalue(), 422),
        Upload("text.mid", b"these are not the notes you are looking for\n" * 20, 422),
        Upload("empty.mid", b"", 422),
        Upload("oversized.mid", b"MThd" + rng.randbytes(limit + 1024), 413),
    ]


# ----------------------------------------------------------------------------- the server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out += [int(x) for x in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


class Server:
    def __init__(self, index: Path, args: list[str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.NamedTemporaryFile(prefix="serve-load-", suffix=".log", delete=False)
        exe = str(Path(sys.executable).with_name("musicidx"))
        cmd = [exe, "serve", "--index", str(index), "--port", str(self.port), *args]
        self.cmd = cmd
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        import httpx

        deadline = time.monotonic() + 120
        while True:
            if self.proc.poll() is not None:
                sys.exit(f"the server exited: {Path(self.log.name).read_text()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                sys.exit("the server did not start within 120 s")
            time.sleep(0.2)

    def memory(self) -> dict[str, float]:
        main = rss_mb(self.proc.pid)
        workers = [rss_mb(c) for c in children(self.proc.pid)]
        return {
            "server_mb": round(main, 1),
            "workers_mb": [round(w, 1) for w in workers],
            "total_mb": round(main + sum(workers), 1),
        }

    def health(self) -> dict[str, Any]:
        import httpx

        return dict(httpx.get(self.url + "/healthz", timeout=5).json())

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.unlink(self.log.name)


# ----------------------------------------------------------------------------- the load


@dataclass
class Result:
    upload: Upload
    status: int
    seconds: float
    body: dict[str, Any] | None
    retry_after: str | None
    generation: str | None
    error: str = ""


@dataclass
class Run:
    results: list[Result] = field(default_factory=list)
    wall: float = 0.0


def load(url: str, uploads: list[Upload], concurrency: int, max_seconds: float, on_done: Any = None) -> Run:
    """Send every upload once (in order, ``concurrency`` at a time); stops at ``max_seconds``."""
    import httpx

    run = Run()
    lock = threading.Lock()
    nxt = iter(range(len(uploads)))
    deadline = time.monotonic() + max_seconds

    def worker() -> None:
        with httpx.Client(timeout=120) as client:
            while time.monotonic() < deadline:
                with lock:
                    i = next(nxt, None)
                if i is None:
                    return
                u = uploads[i]
                t = time.perf_counter()
                try:
                    r = client.post(url + "/v1/query", files=[("files", (u.name, u.data, "audio/midi"))])
                    body = r.json() if r.headers.get("content-type", "").startswith("application/json") else None
                    res = Result(
                        u, r.status_code, time.perf_counter() - t, body, r.headers.get("retry-after"),
                        r.headers.get("x-musicidx-generation"),
                    )  # fmt: skip
                except httpx.HTTPError as e:
                    res = Result(u, 0, time.perf_counter() - t, None, None, None, f"{type(e).__name__}: {e}")
                with lock:
                    run.results.append(res)
                    if on_done is not None:
                        on_done(len(run.results))

    began = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    run.wall = time.perf_counter() - began
    return run


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, int(round(q / 100 * (len(xs) - 1)))))] if xs else float("nan")


def summarise(run: Run, reference: dict[str, dict[str, Any]], *, overload: bool = False) -> dict[str, Any]:
    """Latency and throughput of the answered requests; every status checked against what its
    upload must get (a 503 is deliberate only in the ``overload`` run, and must carry a numeric
    Retry-After), and every answer against the reference answer for its file."""
    ok = [r for r in run.results if r.status == 200]
    deliberate = [r for r in run.results if overload and r.status == 503 and (r.retry_after or "").isdigit()]
    wrong_status = [r for r in run.results if r.status != r.upload.expect and r not in deliberate]
    wrong_answer = 0
    for r in ok:
        a = (r.body or {}).get("answers", [{}])[0]
        ref = reference.setdefault(r.upload.name, a)
        wrong_answer += a != ref or "composer" not in a
    lat = [r.seconds for r in ok]
    return {
        "requests": len(run.results),
        "answered": len(ok),
        "p50_s": round(pct(lat, 50), 3),
        "p99_s": round(pct(lat, 99), 3),
        "mean_s": round(statistics.fmean(lat), 3) if lat else None,
        "throughput_per_s": round(len(ok) / run.wall, 2) if run.wall else None,
        "wall_s": round(run.wall, 1),
        "statuses": {str(s): sum(r.status == s for r in run.results) for s in sorted({r.status for r in run.results})},
        "deliberate_503": len(deliberate),
        "503_without_retry_after": sum(r.status == 503 and not (r.retry_after or "").isdigit() for r in run.results),
        "errors": len(wrong_status),
        "error_examples": [f"{r.upload.name}: {r.status} {r.error or r.body}"[:300] for r in wrong_status[:5]],
        "answers_differing_from_reference": wrong_answer,
        "generations": sorted({r.generation for r in run.results if r.generation}),
    }


def main() -> None:
    """Run the chosen modes in order and write their report. Over 60 lines because each mode is a short
    script of its own -- start a server, load it, check, stop it -- read top to bottom; they share
    only the uploads, the reference answers and the report, which live here."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--index", type=Path, required=True)
    ap.add_argument("--midi", type=Path, action="append", help=f"folders of real MIDI [{TEST_FOLDER}]")
    ap.add_argument("--modes", default="steady,garbage,swap,overload,memory")
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--memory-requests", type=int, default=2000)
    ap.add_argument("--concurrency", default="1,4,16", help="levels of the steady mode")
    add_corpus_argument(ap, what=": the swap mode rebuilds the index from it")
    ap.add_argument("--max-seconds", type=float, default=900, help="wall-clock limit of each run")
    ap.add_argument("--json-out", type=Path)
    args = ap.parse_args()
    modes = args.modes.split(",")
    rng = random.Random(12)
    good = good_files(args.midi or [TEST_FOLDER])
    seq = lambda n: [good[i % len(good)] for i in range(n)]  # noqa: E731
    reference: dict[str, dict[str, Any]] = {}
    out: dict[str, Any] = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {
            "cpus": os.cpu_count(),
            "cpu": next(
                (ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), ""
            ),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "index": str(args.index),
        "files": len(good),
        "modes": {},
    }

    def report(name: str, data: dict[str, Any]) -> None:
        data["load_average_after"] = [round(x, 2) for x in os.getloadavg()]  # other work on the machine shows here
        out["modes"][name] = data
        print(json.dumps({name: data}), flush=True)

    if "steady" in modes:
        server = Server(args.index, [])
        try:
            out["server"] = {"command": " ".join(server.cmd[1:]), "health": server.health()}
            for c in map(int, args.concurrency.split(",")):
                before = server.memory()
                s = summarise(load(server.url, seq(args.requests), c, args.max_seconds), reference)
                report(
                    f"steady_c{c}", {"concurrency": c, **s, "memory_before": before, "memory_after": server.memory()}
                )
        finally:
            server.stop()

    if "garbage" in modes:
        limit = 2**20
        server = Server(args.index, ["--max-upload-mb", "1"])
        try:
            junk = garbage_files(good[0].data, rng, limit)
            mixed = [junk[i // 10 % len(junk)] if i % 10 == 9 else good[i % len(good)] for i in range(args.requests)]
            before = server.memory()
            run = load(server.url, mixed, 4, args.max_seconds)
            s = summarise(run, reference)
            bad = [r for r in run.results if r.upload.expect != 200]
            s["garbage"] = {
                "sent": len(bad),
                "got_their_4xx": sum(r.status == r.upload.expect for r in bad),
                "by_kind": {u.name: [r.status for r in bad if r.upload is u] for u in junk},
            }
            report(
                "garbage_10pct_c4", {"concurrency": 4, **s, "memory_before": before, "memory_after": server.memory()}
            )
        finally:
            server.stop()

    if "swap" in modes:
        served = Path(tempfile.mkdtemp(prefix="serve-load-swap-")) / "idx"
        shutil.copytree(args.index, served)
        server = Server(served, [])
        exe = str(Path(sys.executable).with_name("musicidx"))
        build: dict[str, Any] = {}

        def rebuild(done: int) -> None:
            if done == args.requests // 4 and "proc" not in build:
                build["began_at_request"] = done
                build["proc"] = subprocess.Popen(
                    [exe, "build", str(args.corpus), "--out", str(served)],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )

        try:
            run = load(server.url, seq(args.requests), 4, args.max_seconds, on_done=rebuild)
            s = summarise(run, reference)
            proc = build.get("proc")
            if proc is not None:
                build["exit"] = proc.wait(timeout=600)
            time.sleep(2)
            h = server.health()
            s["rebuild"] = {k: v for k, v in build.items() if k != "proc"}
            s["generation_after"], s["reloads"] = h["generation"], h["reloads"]
            report("swap_c4", {"concurrency": 4, **s})
        finally:
            server.stop()
            shutil.rmtree(served.parent, ignore_errors=True)

    if "overload" in modes:
        server = Server(args.index, ["--workers", "1", "--queue", "2"])
        try:
            s = summarise(load(server.url, seq(args.requests), 24, args.max_seconds), reference, overload=True)
            report("overload_c24_w1_q2", {"concurrency": 24, **s})
        finally:
            server.stop()

    if "memory" in modes:
        server = Server(args.index, [])
        try:
            trace = [{"requests": 0, **server.memory()}]

            def sample(done: int) -> None:
                if done % 100 == 0:
                    trace.append({"requests": done, **server.memory()})

            s = summarise(
                load(server.url, seq(args.memory_requests), 4, args.max_seconds * 3, on_done=sample), reference
            )
            s["rss_trace"] = trace
            s["growth_total_mb"] = round(trace[-1]["total_mb"] - trace[0]["total_mb"], 1)
            s["growth_server_mb"] = round(trace[-1]["server_mb"] - trace[0]["server_mb"], 1)
            warm = next((t for t in trace if t["requests"] >= 200), trace[0])
            s["growth_total_after_200_mb"] = round(trace[-1]["total_mb"] - warm["total_mb"], 1)
            report("memory_c4", {"concurrency": 4, **s})
        finally:
            server.stop()

    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
