"""``musicidx serve`` through FastAPI's test client (issue 12): answers equal to ``query --json``
on the same files, every error status (401, 413, 415, 422, 503), uploads kept private and deleted,
the training-clip player, a rebuilt index picked up without failing a request in flight, a dead
worker replaced; and that neither ``import musicidx`` nor ``musicidx --help`` loads the web stack."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import io
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from midi_factory import TRACK_NAMES
from tiny import FEATURES

from musicidx.cli import cli

WEB = ("fastapi", "uvicorn", "starlette", "python_multipart")


# ------------------------------------------------------------------------ without the extra


def test_import_musicidx_and_help_do_not_load_the_web_stack(tmp_path: Path) -> None:
    code = (
        "import sys, musicidx\n"
        "from musicidx.cli import cli\n"
        "for args in (['--help'], ['serve', '--help']):\n"
        "    try:\n"
        "        cli(args, prog_name='musicidx')\n"
        "    except SystemExit:\n"
        "        pass\n"
        f"print(sorted(m for m in {WEB!r} if m in sys.modules))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert "serve  " in r.stdout and "--token TEXT" in r.stdout  # both helps were printed...
    assert r.stdout.splitlines()[-1] == "[]"  # ...without importing any of the web stack


def test_serve_without_the_extra_is_one_line(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "sys.modules['fastapi'] = None  # as if musicidx[serve] were not installed\n"
        "from musicidx.cli import main\n"
        "sys.argv = ['musicidx', 'serve', '--index', 'idx']\n"
        "main()\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip() == (
        "musicidx: error: 'musicidx serve' needs the serve extra (no fastapi): pip install 'musicidx[serve]' "
        "(from a source checkout: pip install '.[serve]')"
    )


# ------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def web() -> None:
    pytest.importorskip("fastapi", reason="the serve extra (musicidx[serve]) is not installed")


@pytest.fixture(scope="module")
def service(web: None, built_index: Path) -> Iterator[Any]:
    """One server (one worker process) on the session's tiny index, shared by the module."""
    from musicidx.serve.service import QueryService, ServeConfig

    s = QueryService(ServeConfig(built_index, workers=1, queue=4))
    yield s
    s.close()


@pytest.fixture
def client(service: Any) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    from musicidx.serve.app import create_app

    with TestClient(create_app(service)) as c:
        yield c


def _cli_answers(index: Path, files: list[Path], monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """What ``musicidx query --json`` prints for ``files`` (all in one folder, named as uploaded)."""
    monkeypatch.chdir(files[0].parent)
    r = CliRunner().invoke(cli, ["query", *(f.name for f in files), "--index", str(index), "--json"])
    return [json.loads(line) for line in r.stdout.splitlines()]


def _post(client: Any, files: list[Path], **kw: Any) -> Any:
    return client.post("/v1/query", files=[("files", (f.name, f.read_bytes(), "audio/midi")) for f in files], **kw)


# ------------------------------------------------------------------------ answers


@pytest.mark.fluidsynth
def test_answers_equal_query_json_on_the_same_files(
    client: Any, built_index: Path, corpus_dir: Path, bad_corpus: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    folder = bad_corpus["drums-only"].path.parent
    for composer in ("Alpha", "Beta", "Gamma"):  # training tracks (same_composition) under new names
        shutil.copy(corpus_dir / composer / TRACK_NAMES[2], folder / f"{composer} copy.mid")
    files = [folder / f"{c} copy.mid" for c in ("Alpha", "Beta", "Gamma")]
    files += [bad_corpus[k].path for k in ("drums-only", "blip-5ms", "tempo-1bpm", "unicode-name")]
    expected = _cli_answers(built_index, files, monkeypatch)
    assert len(expected) == len(files) and all("composer" in a for a in expected)
    for f, want in zip(files, expected):
        r = _post(client, [f])
        assert r.status_code == 200, r.text
        assert r.json() == {"answers": [want]}


@pytest.mark.fluidsynth
def test_several_files_answer_in_order_and_a_bad_one_makes_422(
    client: Any, built_index: Path, bad_corpus: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    files = [bad_corpus[k].path for k in ("spaces-name", "random-bytes", "tempo-1000bpm")]
    r = _post(client, files)
    assert r.status_code == 422
    body = r.json()
    assert body["answers"] == _cli_answers(built_index, files, monkeypatch)
    assert ["error" in a for a in body["answers"]] == [False, True, False]
    assert body["detail"] == "random-bytes.mid: not a MIDI file (no 'MThd' header)"


@pytest.mark.fluidsynth
@pytest.mark.parametrize(
    "key",
    [
        "zero-bytes",
        "random-bytes",
        "truncated-50",
        "garbage-track",
        "garbage-status",
        "no-notes",
        "ten-hours",
        "type-2",
    ],
)
def test_a_file_that_is_not_midi_or_breaks_a_limit_is_422_with_the_cli_reason(
    client: Any, built_index: Path, bad_corpus: dict[str, Any], monkeypatch: pytest.MonkeyPatch, key: str
) -> None:
    import re

    case = bad_corpus[key]
    (want,) = _cli_answers(built_index, [case.path], monkeypatch)
    assert re.search(case.reason, want["error"]), want
    r = _post(client, [case.path])
    assert r.status_code == 422
    assert r.json() == {"answers": [want], "detail": f"{case.name}: {want['error']}"}
    assert client.get("/healthz").json()["status"] == "ok"  # the server lives on


# ------------------------------------------------------------------------ the other statuses


@pytest.mark.fluidsynth
def test_an_upload_over_the_size_limit_is_413(
    client: Any, service: Any, bad_corpus: dict[str, Any], good_midi: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    huge = bad_corpus["huge-sparse"].path  # 33 MiB: the CLI's 32 MiB limit is also the server's
    r = _post(client, [huge])
    assert r.status_code == 413
    assert r.json() == {"detail": "huge-sparse.mid: upload is over the 32 MiB limit"}
    size = good_midi.stat().st_size
    monkeypatch.setattr(service, "config", dataclasses.replace(service.config, max_upload_bytes=size - 1))
    assert _post(client, [good_midi]).status_code == 413
    monkeypatch.setattr(service, "config", dataclasses.replace(service.config, max_upload_bytes=size, max_files=2))
    assert _post(client, [good_midi, good_midi]).status_code == 200
    r = _post(client, [good_midi] * 3)
    assert r.status_code == 413 and r.json()["detail"] == "more than 2 files in one request; send at most 2"
    assert not list(service.workdir.glob("upload-*")), "a refused upload leaves nothing behind"


@pytest.mark.fluidsynth
def test_not_multipart_is_415_and_no_file_is_422(client: Any) -> None:
    r = client.post("/v1/query", content=b"MThd", headers={"content-type": "audio/midi"})
    assert r.status_code == 415 and "multipart/form-data" in r.json()["detail"]
    r = client.post("/v1/query", data={"note": "no file here"}, files={"x": ("", b"")})
    assert r.status_code == 422
    assert r.json()["detail"] == "no file in the request; send one or more MIDI files as multipart/form-data"


@pytest.mark.fluidsynth
def test_a_full_queue_is_503_with_retry_after(client: Any, service: Any, good_midi: Path) -> None:
    service.in_flight = service.capacity - 1  # as if other requests held all places but one
    try:
        r = _post(client, [good_midi, good_midi])
        assert r.status_code == 503
        assert int(r.headers["retry-after"]) >= 1
        assert r.json()["detail"].startswith(f"busy: {service.capacity - 1} files in work or queued, room for ")
        assert _post(client, [good_midi]).status_code == 200  # one still fits
        service.in_flight = service.capacity
        malformed = {"content-type": "multipart/form-data; boundary=x"}
        r = client.post("/v1/query", content=b"not even multipart", headers=malformed)
        assert r.status_code == 503  # refused before the body was read (it would be 422)
    finally:
        service.in_flight = 0
    assert _post(client, [good_midi, good_midi]).status_code == 200
    r = client.post("/v1/query", content=b"not even multipart", headers=malformed)
    assert r.status_code == 422 and r.json()["detail"].startswith("malformed multipart body")


@pytest.mark.fluidsynth
def test_a_token_is_required_when_set(
    client: Any, service: Any, good_midi: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service, "config", dataclasses.replace(service.config, token="s3cret"))
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret"}):
        r = _post(client, [good_midi], headers=headers)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert client.get("/v1/info", headers=headers).status_code == 401
    assert _post(client, [good_midi], headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert client.get("/healthz").status_code == 200 and client.get("/").status_code == 200  # open


# ------------------------------------------------------------------------ privacy of uploads


@pytest.mark.fluidsynth
def test_uploads_live_only_in_a_private_folder_and_are_deleted(
    client: Any, service: Any, good_midi: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = []
    real = service.query

    async def spy(uploads: list[Any], **kw: Any) -> Any:
        for u in uploads:
            seen.append((u.path, stat.S_IMODE(u.path.stat().st_mode), stat.S_IMODE(u.path.parent.stat().st_mode)))
        return await real(uploads, **kw)

    monkeypatch.setattr(service, "query", spy)
    assert _post(client, [good_midi, good_midi]).status_code == 200
    assert stat.S_IMODE(service.workdir.stat().st_mode) == 0o700
    assert len(seen) == 2
    for path, mode, folder_mode in seen:
        assert path.parent.parent == service.workdir and mode == 0o600 and folder_mode == 0o700
        assert not path.exists() and not path.parent.exists()  # deleted with the answer


# ------------------------------------------------------------------------ info, health, docs, page


@pytest.mark.fluidsynth
def test_info_health_docs_and_page(client: Any, built_index: Path, corpus_dir: Path) -> None:
    info = client.get("/v1/info").json()
    manifest = json.loads((built_index / "manifest.json").read_text())
    assert info["composers"] == manifest["composers"] and info["counts"] == manifest["counts"]
    assert info["k"] == manifest["k"] and info["threshold"] == manifest["novelty"]["threshold"]
    assert info["limits"]["max_upload_bytes"] == 32 * 2**20
    assert info["corpus_root"] == str(corpus_dir.resolve())  # recorded by build: the clip player finds the MIDI
    h = client.get("/healthz").json()
    assert h["status"] == "ok" and h["generation"] == 1 and h["in_flight"] == 0
    spec = client.get("/openapi.json").json()
    assert {"/v1/query", "/v1/info", "/v1/clip", "/healthz"} <= set(spec["paths"])
    assert "multipart/form-data" in spec["paths"]["/v1/query"]["post"]["requestBody"]["content"]
    assert client.get("/docs").status_code == 200
    page = client.get("/")
    assert page.status_code == 200 and 'aria-live="polite"' in page.text and '<label for="file">' in page.text
    assert client.get("/static/app.js").status_code == 200 and client.get("/static/style.css").status_code == 200


# ------------------------------------------------------------------------ audio


def _wav(data: bytes) -> tuple[int, float]:
    with wave.open(io.BytesIO(data)) as w:
        return w.getframerate(), w.getnframes() / w.getframerate()


@pytest.mark.fluidsynth
def test_audio_of_the_best_matching_query_clip_and_of_the_training_clip(
    client: Any, corpus_dir: Path, good_midi: Path
) -> None:
    plain = _post(client, [good_midi]).json()
    r = _post(client, [good_midi], params={"audio": 1})
    body = r.json()
    assert r.status_code == 200 and body["answers"] == plain["answers"]  # audio does not change the answer
    a, (clip,) = body["answers"][0], body["audio"]
    best = a["nearest"][0]
    assert clip["start_s"] == best["query_start_s"]
    prefix = "data:audio/wav;base64,"
    assert clip["wav"].startswith(prefix)
    assert _wav(base64.b64decode(clip["wav"][len(prefix) :])) == (FEATURES.sample_rate, FEATURES.clip_seconds)
    t = client.get("/v1/clip", params={"track": best["path"], "start": best["match_start_s"]})
    assert t.status_code == 200 and t.headers["content-type"] == "audio/wav"
    assert _wav(t.content) == (FEATURES.sample_rate, FEATURES.clip_seconds)
    near = client.get("/v1/clip", params={"track": best["path"], "start": best["match_start_s"] + 0.0009})
    assert near.content == t.content  # the start as answers round it finds the clip
    r = client.get("/v1/clip", params={"track": best["path"], "start": best["match_start_s"] + 0.5})
    assert r.status_code == 404 and "has no clip of" in r.json()["detail"]  # only clips of the index


@pytest.mark.fluidsynth
def test_a_training_midi_no_longer_at_its_path_is_said_in_words(
    client: Any, service: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clips = service.generation.searcher.contents.clips
    track, start = clips.column("path")[0].as_py(), clips.column("start_s")[0].as_py()
    searcher = service.generation.searcher
    moved = dataclasses.replace(searcher.manifest, corpus_root=str(tmp_path / "moved"))
    monkeypatch.setattr(searcher.contents, "manifest", moved)
    r = client.get("/v1/clip", params={"track": track, "start": start})
    assert r.status_code == 404
    assert r.json()["detail"] == (
        f"the training MIDI is no longer at {tmp_path / 'moved' / track}; "
        "start 'musicidx serve' with --midi-dir to hear it"
    )
    changed = tmp_path / "elsewhere"
    (changed / track).parent.mkdir(parents=True)
    (changed / track).write_bytes(b"MThd other bytes")
    monkeypatch.setattr(service, "config", dataclasses.replace(service.config, midi_dirs=(changed,)))
    r = client.get("/v1/clip", params={"track": track, "start": start})
    assert r.status_code == 404 and r.json()["detail"] == (
        f"the training MIDI {changed / track} has changed since the index was built, so it cannot be played"
    )


# ------------------------------------------------------------------------ a rebuilt index, a dead worker


@pytest.mark.slow  # a query service (worker process) of its own
@pytest.mark.fluidsynth
def test_a_swapped_index_is_picked_up_without_failing_a_request_in_flight(
    web: None, index_copy: Path, corpus_dir: Path, good_midi: Path, tmp_path: Path
) -> None:
    """A request that began on the old index is answered by it; the next one by the new index."""
    from musicidx.indexer.format import read_index, save_index
    from musicidx.query.engine import Searcher
    from musicidx.serve.service import QueryService, ServeConfig, Upload

    old = Searcher(index_copy).query(good_midi).to_dict()
    service = QueryService(ServeConfig(index_copy, workers=1, queue=4))
    try:

        async def scenario() -> tuple[dict[str, Any], bool, dict[str, Any]]:
            u = Upload(good_midi.name, good_midi)
            in_flight = asyncio.create_task(service.query([u]))
            await asyncio.sleep(0.01)  # the request has taken its index and is rendering
            contents = read_index(index_copy)
            nov = contents.manifest.novelty
            by_k = {k: t + 1.0 for k, t in (nov.thresholds_by_k or {}).items()}
            contents.manifest = dataclasses.replace(
                contents.manifest, novelty=dataclasses.replace(nov, thresholds_by_k=by_k)
            )
            save_index(contents, index_copy)  # the atomic swap a rebuild does
            swapped_while_in_flight = not in_flight.done()
            assert await service.maybe_reload(force=True)
            first = (await in_flight).answers[0]
            second = (await service.query([u])).answers[0]
            # an index folder that cannot be loaded is reported and the one loaded keeps serving
            (index_copy / "manifest.json").write_text("{ half written")
            assert not await service.maybe_reload(force=True)
            assert f"{index_copy}/manifest.json: manifest.json is not valid JSON" in service.health()["reload_error"]
            assert (await service.query([u])).answers[0] == second
            return first, swapped_while_in_flight, second

        first, swapped_while_in_flight, second = asyncio.run(scenario())
        assert swapped_while_in_flight
        assert {**first, "file": good_midi.name} == {**old, "file": good_midi.name}
        assert second["threshold"] == pytest.approx(old["threshold"] + 1.0) and service.generation.number == 2
        assert service.health()["reloads"] == 1
    finally:
        service.close()


@pytest.mark.slow  # a worker process killed and started again
@pytest.mark.fluidsynth
def test_a_dead_worker_is_replaced(client: Any, service: Any, good_midi: Path) -> None:
    assert _post(client, [good_midi]).status_code == 200
    pids = service.worker_pids()
    assert pids
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while any(os.path.exists(f"/proc/{p}") and "zombie" not in _state(p) for p in pids):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    statuses = [_post(client, [good_midi]).status_code for _ in range(2)]
    assert statuses[-1] == 200 and set(statuses) <= {200, 500}
    assert set(service.worker_pids()).isdisjoint(pids)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split("\n")[0].lower()
    except (OSError, IndexError):
        return "zombie"


# ------------------------------------------------------------------------ the command


def test_serve_of_a_missing_index_is_one_line(web: None, tmp_path: Path) -> None:
    r = CliRunner().invoke(cli, ["serve", "--index", str(tmp_path / "none")])
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert r.stderr.strip() == (
        f"musicidx: error: {tmp_path / 'none'}: no index here (build one with 'musicidx build MIDI_DIR --out INDEX')"
    )


@pytest.mark.fluidsynth
def test_serve_on_a_busy_port_is_one_line(web: None, built_index: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = CliRunner().invoke(cli, ["serve", "--index", str(built_index), "--port", str(port), "--workers", "1"])
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert r.stderr.strip() == f"musicidx: error: cannot listen on 127.0.0.1:{port}: Address already in use"


# ------------------------------------------------------------------------ small faults (issue 19, item 6)


def test_a_malformed_parameter_is_a_one_line_422(client: Any) -> None:
    r = client.get("/v1/clip", params={"track": "Alpha/x.mid", "start": "abc"})
    assert r.status_code == 422
    assert r.json() == {
        "detail": "query parameter start: Input should be a valid number, unable to parse string as a number "
        "(got 'abc')"
    }
    missing = client.get("/v1/clip", params={"start": "1"}).json()["detail"]
    assert missing.startswith("query parameter track: Field required") and "\n" not in missing


def test_the_banner_counts_one_worker_in_the_singular(service: Any) -> None:
    assert service.summary().endswith("; 1 worker, queue 4")


def test_a_favicon_so_that_no_page_load_is_a_404(client: Any) -> None:
    page = client.get("/").text
    assert '<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">' in page
    for url in ("/static/favicon.svg", "/favicon.ico"):
        r = client.get(url)
        assert r.status_code == 200 and r.headers["content-type"].startswith("image/svg+xml")
        assert r.content.startswith(b"<svg")


def test_info_says_whether_the_threshold_is_calibrated(client: Any) -> None:
    """The tiny index holds out three works: too few to calibrate, and the page reads this."""
    info = client.get("/v1/info").json()
    assert info["calibrated"] is False and "only" in info["uncalibrated_reason"]
