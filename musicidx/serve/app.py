"""The HTTP face of :class:`~musicidx.serve.service.QueryService` (FastAPI; the ``serve`` extra).

Endpoints::

    POST /v1/query        multipart/form-data, one or more MIDI files (any field name; 'files' in
                          the docs) -> {"answers": [...]}: per file, in order, the object
                          'musicidx query --json' prints for it; ?audio=1 adds each answer's
                          best-matching query clip as a WAV data URL ("audio": [...])
    GET  /v1/clip         ?track=PATH&start=S: a training clip of the index, rendered to WAV
    GET  /v1/info         the index's manifest summary and the server's limits
    GET  /healthz         liveness: generation, files in work, reloads
    GET  /                the page (static/index.html, app.js, style.css)
    GET  /docs            OpenAPI documentation (/openapi.json)

Every answer carries the index generation that made it (``X-Musicidx-Generation``: 1 at start,
one more for each rebuilt index picked up).

Statuses: 401 without the bearer token (when the server has one), 413 an upload over the size
limit or too many files, 415 not multipart, 422 a file that is not MIDI or breaks a limit (the
body's ``detail`` is the one-line reason ``musicidx query`` gives; ``answers`` still holds every
file's object) or a malformed parameter (``detail`` one line too), 503 with Retry-After when the
queue is full, 500 the server's own fault.

Uploads are streamed straight into the request's private folder and counted as they arrive: the
first byte over the limit ends the request with 413, so no oversized upload is ever held whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import os
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from musicidx import __version__
from musicidx.encoder.errors import MusicIdxError

from .errors import BadInput, ServeError, TooLarge, Unauthorized, Unsupported, is_input_fault
from .service import QueryService, Upload

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

STATIC = Path(__file__).resolve().parent / "static"
_FIELD_LIMIT = 64 * 1024  # a non-file form field (ignored) may not be larger than this
_PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; media-src 'self' blob: data:; img-src 'self' data:",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

_MULTIPART_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "properties": {"files": {"type": "array", "items": {"type": "string", "format": "binary"}}},
                "required": ["files"],
            }
        }
    },
}


def create_app(service: QueryService, *, close_service: bool = False) -> FastAPI:
    """The FastAPI application around ``service`` (which the caller made and, unless
    ``close_service``, closes); a background task picks up a rebuilt index."""
    app = FastAPI(
        title="musicidx",
        version=__version__,
        summary="Who composed this MIDI file, and is it a composer the index knows?",
        lifespan=_lifespan(service, close_service=close_service),
    )
    app.state.service = service
    _add_error_handlers(app)
    authorised = _authorisation(service)
    _add_query_route(app, service, authorised)
    _add_index_routes(app, service, authorised)
    _add_page_routes(app, service)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def _lifespan(service: QueryService, *, close_service: bool) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """While the app runs, a task that picks up a rebuilt index every ``reload_seconds``; at the
    end it is cancelled (and the service closed, with ``close_service``)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async def watch() -> None:
            while True:
                await asyncio.sleep(service.config.reload_seconds)
                await service.maybe_reload()

        task = asyncio.create_task(watch())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            if close_service:
                service.close()

    return lifespan


def _add_error_handlers(app: FastAPI) -> None:
    """A :class:`ServeError` is its status with a one-line ``detail`` (and WWW-Authenticate or
    Retry-After where they apply); any other :class:`MusicIdxError` is the server's fault (500)."""

    @app.exception_handler(ServeError)
    async def serve_error(request: Request, e: ServeError) -> JSONResponse:
        headers = {}
        if e.status == 401:
            headers["WWW-Authenticate"] = "Bearer"
        retry = getattr(e, "retry_after", None)
        if retry is not None:
            headers["Retry-After"] = str(retry)
        return JSONResponse({"detail": str(e)}, status_code=e.status, headers=headers)

    @app.exception_handler(MusicIdxError)
    async def server_fault(request: Request, e: MusicIdxError) -> JSONResponse:
        return JSONResponse({"detail": str(e)}, status_code=500)

    @app.exception_handler(RequestValidationError)
    async def bad_parameter(request: Request, e: RequestValidationError) -> JSONResponse:
        """A malformed parameter (``/v1/clip?start=abc``) is a 422 with a one-line ``detail`` like
        every other 422, not FastAPI's list of error objects."""
        return JSONResponse({"detail": validation_detail(e.errors())}, status_code=422)


def _authorisation(service: QueryService) -> Callable[[Request], None]:
    """The dependency of every ``/v1`` route: the bearer token, when the server has one."""

    def authorised(request: Request) -> None:
        token = service.config.token
        if not token:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
            raise Unauthorized("this server needs 'Authorization: Bearer <token>' (the token it was started with)")

    return authorised


def _add_query_route(app: FastAPI, service: QueryService, authorised: Callable[[Request], None]) -> None:
    @app.post(
        "/v1/query",
        dependencies=[Depends(authorised)],
        openapi_extra={"requestBody": _MULTIPART_BODY},
        responses={
            401: {"description": "missing or wrong bearer token"},
            413: {"description": "an upload over the size limit, or too many files"},
            422: {"description": "a file that is not MIDI or breaks a limit; detail is the one-line reason"},
            503: {"description": "queue full; see Retry-After"},
        },
    )
    async def query(
        request: Request, audio: bool = Query(False, description="also return each best-matching query clip as WAV")
    ) -> JSONResponse:
        """Name the composer of each uploaded MIDI file: per file, in order, what
        `musicidx query --json` prints for it."""
        service.check_room(1)  # a full server refuses before reading any upload
        with service.upload_folder() as folder:
            uploads = await read_uploads(
                request, folder, max_bytes=service.config.max_upload_bytes, max_files=service.config.max_files
            )
            outcome = await service.query(uploads, audio=audio)
        body: dict[str, Any] = {"answers": outcome.answers}
        if outcome.audio is not None:
            body["audio"] = outcome.audio
        status = 200
        if outcome.failures:
            name, first = outcome.failures[0]
            status = 422 if all(is_input_fault(e) for _, e in outcome.failures) else 500
            body["detail"] = f"{name}: {first.reason}"
        return JSONResponse(body, status_code=status, headers={"X-Musicidx-Generation": str(outcome.generation)})


def _add_index_routes(app: FastAPI, service: QueryService, authorised: Callable[[Request], None]) -> None:
    @app.get(
        "/v1/clip",
        dependencies=[Depends(authorised)],
        response_class=Response,
        responses={200: {"content": {"audio/wav": {}}}, 404: {"description": "no such clip, or its MIDI is gone"}},
    )
    async def clip(
        track: str = Query(..., description="a training track's path as answers name it"),
        start: float = Query(..., description="the clip's start in seconds (match_start_s)"),
    ) -> Response:
        """A training clip of the index, rendered from its MIDI file to WAV as the index heard it."""
        wav = await service.training_clip_wav(track, start)
        return Response(wav, media_type="audio/wav", headers={"Cache-Control": "private, max-age=3600"})

    @app.get("/v1/info", dependencies=[Depends(authorised)])
    async def info() -> dict[str, Any]:
        """The index's manifest summary (composers, counts, k, thresholds, features) and the limits."""
        return service.info()


def _add_page_routes(app: FastAPI, service: QueryService) -> None:
    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        """Liveness: the index generation serving, files in work, answers given, reloads."""
        return service.health()

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers=_PAGE_HEADERS)

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> FileResponse:  # what a browser asks for when a page names no icon
        return FileResponse(STATIC / "favicon.svg", media_type="image/svg+xml")


async def read_uploads(request: Request, folder: Path, *, max_bytes: int, max_files: int) -> list[Upload]:
    """Stream a multipart body's files into ``folder`` (``0.mid``, ``1.mid``... mode 0600),
    refusing the first byte over ``max_bytes`` for a file or a file over ``max_files``."""
    from python_multipart import MultipartParser
    from python_multipart.exceptions import MultipartParseError
    from python_multipart.multipart import parse_options_header

    kind, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise Unsupported("send the MIDI files as multipart/form-data (e.g. curl -F files=@piece.mid)")
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > max_files * (max_bytes + 16 * 1024):
        raise TooLarge(f"the request is {int(length)} bytes, over {max_files} files of {_size(max_bytes)}")

    parts = _Parts(folder, max_bytes=max_bytes, max_files=max_files)
    parser = MultipartParser(boundary, parts.callbacks())
    try:
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
    except MultipartParseError as e:
        raise BadInput(f"malformed multipart body ({e})") from e
    finally:
        parts.close()
    if not parts.uploads:
        raise BadInput("no file in the request; send one or more MIDI files as multipart/form-data")
    return parts.uploads


class _Parts:
    """The callbacks python-multipart's parser calls as a body streams in: each file part is written
    to ``folder`` as it arrives and becomes an :class:`Upload`; a plain form field is read and
    ignored.  The first byte over a limit is a :class:`TooLarge`."""

    def __init__(self, folder: Path, *, max_bytes: int, max_files: int) -> None:
        self.folder, self.max_bytes, self.max_files = folder, max_bytes, max_files
        self.uploads: list[Upload] = []
        self.on_part_begin()

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": self.on_part_begin,
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
        }

    def on_part_begin(self) -> None:
        self.headers: dict[bytes, bytes] = {}
        self.field, self.value = b"", b""
        self.fh: BinaryIO | None = None
        self.size, self.name = 0, ""

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.value += data[start:end]

    def on_header_end(self) -> None:
        self.headers[self.field.lower()] = self.value
        self.field, self.value = b"", b""

    def on_headers_finished(self) -> None:
        from python_multipart.multipart import parse_options_header

        _, opts = parse_options_header(self.headers.get(b"content-disposition", b""))
        filename = opts.get(b"filename")
        if not filename:
            return  # a plain form field, or a form's file input left empty: read and ignored
        if len(self.uploads) >= self.max_files:
            raise TooLarge(f"more than {self.max_files} files in one request; send at most {self.max_files}")
        name = filename.decode("utf-8", "backslashreplace")
        path = self.folder / f"{len(self.uploads)}.mid"
        self.fh, self.name = os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb"), name
        self.uploads.append(Upload(name, path))

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        self.size += end - start
        if self.fh is None:
            if self.size > _FIELD_LIMIT:
                raise TooLarge(f"a form field is over {_size(_FIELD_LIMIT)}")
            return
        if self.size > self.max_bytes:
            raise TooLarge(f"{self.name}: upload is over the {_size(self.max_bytes)} limit")
        self.fh.write(data[start:end])

    def on_part_end(self) -> None:
        if self.fh is not None:
            self.fh.close()
            self.fh = None

    def close(self) -> None:
        """Close the file a body that broke off was being written to."""
        if self.fh is not None:
            self.fh.close()


def validation_detail(errors: Any) -> str:
    """FastAPI's validation errors in one line: ``query parameter start: Input should be a valid
    number... (got 'abc')``."""
    parts = []
    for err in errors:
        loc = [str(x) for x in err.get("loc", ())]
        where = f"{loc[0]} parameter {'.'.join(loc[1:])}" if len(loc) > 1 else ".".join(loc) or "request"
        got = f" (got {err['input']!r})" if isinstance(err.get("input"), (str, int, float)) else ""
        parts.append(f"{where}: {err.get('msg', 'invalid')}{got}")
    return "; ".join(parts) or "invalid request"


def _size(n: int) -> str:
    return f"{n / 2**20:g} MiB" if n >= 2**20 else f"{n / 1024:g} KiB" if n >= 1024 else f"{n} bytes"


class Server:
    """A :class:`QueryService` behind uvicorn on a socket bound before anything is printed, so a
    busy port is one clear error (:meth:`start`), not a log line after a banner."""

    def __init__(self, service: QueryService, sock: Any, host: str, port: int) -> None:
        self.service, self.sock, self.host, self.port = service, sock, host, port

    @classmethod
    def start(cls, config: Any, *, host: str, port: int) -> Server:
        """Load the index, start and warm the workers, bind ``host:port``."""
        import socket

        service = QueryService(config)
        try:
            service.warm_up()
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
            except OSError as e:
                sock.close()
                raise MusicIdxError(f"cannot listen on {host}:{port}: {e.strerror or e}") from e
            sock.set_inheritable(True)
        except BaseException:
            service.close()
            raise
        return cls(service, sock, host, port)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def run(self) -> None:
        """Serve until interrupted (SIGINT/SIGTERM: requests in flight are finished first)."""
        import uvicorn

        app = create_app(self.service, close_service=True)
        config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=30)
        server = uvicorn.Server(config)
        try:
            server.run(sockets=[self.sock])
        finally:
            self.sock.close()
            self.service.close()
        if server.started and server.should_exit:
            # uvicorn re-raises the signal that stopped it, which ends here as KeyboardInterrupt; when
            # that signal is not re-raised (seen under load), a stop by signal still exits as Ctrl-C
            raise KeyboardInterrupt
