"""The station's HTTP API, beside the page: thin aiohttp handlers over :class:`.desk.ReviewDesk`.

::

    POST /api/cases                        zip of a DICOM folder (or DICOM files, multipart) -> 201 {"id", ...}
                                           ?series=UID picks a series; several without one -> 409 with the choices
    POST /api/uploads/{upload}/cases       {"series": UID}: the choice for a kept upload -> 201 {"id", ...}
    GET  /api/cases                        {"cases": [...]}, newest first
    GET  /api/cases/{id}                   {"status": "queued|running|done|failed", "message", "versions", ...}
    GET  /api/cases/{id}/versions/{v}/{f}  f: rtstruct.dcm, seg.dcm, ctv.nii.gz, qa.png, report.json; v: n or latest
    POST /api/cases/{id}/cancel            stop its queued or running prediction
    POST /api/cases/{id}/runs              {"model": NAME}: predict again with another of the station's models
    POST /api/cases/{id}/approve           {"version": n|"latest", "by": NAME}: files held by a DICOM node go out
    GET  /api/models                       {"models": [NAME, ...]}, the first is the default

Errors are JSON ``{"message", "status"}`` with a 4xx status (a 500 says only where the details
were logged); never a traceback, never a path on the server. Every value of a request is checked
before use (types, UIDs). Uploads are spooled to disk as they arrive, counted against the upload
limit, and examined in a worker thread within the upload's CPU budget, so the page stays live
meanwhile. The audit log records each call's authenticated identity (:func:`.access.identity`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from ...dicom.uids import uid_problem
from ...errors import CTVError, DicomInputError, UploadError, UploadTooLargeError
from .access import identity, refusal
from .desk import Received, ReviewDesk, SeriesChoice
from .uploads import CHUNK, MB, UploadContents, add_received

logger = logging.getLogger(__name__)

MEDIA_TYPES = {".dcm": "application/dicom", ".gz": "application/gzip", ".png": "image/png",
               ".json": "application/json"}


def add_api(app: web.Application, desk: ReviewDesk, on_received: Callable[[Received], None] | None = None) -> None:
    """Add the API's routes and its error handling to ``app`` (before it starts)."""
    api = StationAPI(desk, on_received)
    app.middlewares.append(json_errors)
    app.router.add_post("/api/cases", api.upload)
    app.router.add_post("/api/uploads/{upload}/cases", api.choose_series)
    app.router.add_get("/api/cases", api.list_cases)
    app.router.add_get("/api/cases/{case}", api.get_case)
    app.router.add_get("/api/cases/{case}/versions/{version}/{file}", api.download)
    app.router.add_post("/api/cases/{case}/cancel", api.cancel)
    app.router.add_post("/api/cases/{case}/runs", api.rerun)
    app.router.add_post("/api/cases/{case}/approve", api.approve)
    app.router.add_get("/api/models", api.models)
    app.router.add_route("*", "/api/{rest:.*}", api.no_such_route)  # before the page's static files answer it


@web.middleware
async def json_errors(request: web.Request, handler):
    """Under /api/, every error is JSON with a message; an unexpected one is logged, not shown."""
    if not request.path.startswith("/api/"):
        return await handler(request)
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        text = exc.text or ""  # aiohttp's own (no such route, wrong method) read "404: Not Found"
        return refusal(request, exc.status, text if text and not text.startswith(f"{exc.status}:") else
                       f"{exc.reason}: {request.method} {request.path}")
    except Exception:  # noqa: BLE001 - a bug must not show a traceback to the client; the log has it
        logger.exception("unexpected error answering %s %s", request.method, request.path)
        return refusal(request, 500, "The station met an unexpected error; the details are in its log.")
    return response


def _fail(status: int, message: str) -> web.HTTPException:
    kinds = {400: web.HTTPBadRequest, 404: web.HTTPNotFound, 409: web.HTTPConflict, 413: web.HTTPRequestEntityTooLarge,
             422: web.HTTPUnprocessableEntity}
    if status == 413:
        return web.HTTPRequestEntityTooLarge(max_size=0, actual_size=0, text=message, content_type="text/plain")
    return kinds[status](text=message, content_type="text/plain")


class StationAPI:
    """The handlers (see the module docstring)."""

    def __init__(self, desk: ReviewDesk, on_received: Callable[[Received], None] | None) -> None:
        self.desk, self.on_received = desk, on_received

    # --- uploads ---------------------------------------------------------------------------------

    async def upload(self, request: web.Request) -> web.Response:
        limit = self.desk.config.limits.max_upload_bytes
        if request.content_length is not None and request.content_length > limit:
            raise _fail(413, f"The upload ({request.content_length // MB} MB) is larger than the station's limit of "
                             f"{limit // MB} MB (ctv review --max-upload-mb).")
        series = request.query.get("series") or None
        if series is not None and uid_problem(series, "?series="):
            raise _fail(400, f"{uid_problem(series, '?series=')}; give a SeriesInstanceUID, or none.")
        upload, contents = self.desk.new_upload()
        kept = False
        try:
            await self._spool(request, contents, limit)
            result = await self._receive(upload, contents, series, identity(request))
            kept = isinstance(result, SeriesChoice)
            if kept:
                self.desk.keep(upload)
            return self._answer(result)
        finally:
            if not kept:
                self.desk.discard(upload)

    async def choose_series(self, request: web.Request) -> web.Response:
        upload = request.match_info["upload"]
        series = (await _json(request)).get("series")
        if not isinstance(series, str) or not series or uid_problem(series, ""):
            raise _fail(400, 'Send {"series": "<SeriesInstanceUID>"}, one of the series the upload was answered with.')
        claimed = self.desk.claim(upload)
        if claimed is None:
            if self.desk.in_use(upload):
                raise _fail(409, f"Upload '{upload}' is being examined for another choice now; wait for its answer.")
            raise _fail(404, f"No upload '{upload[:40]}' is waiting for a series to be chosen (it was used, or removed "
                             "after a day); upload the CT again.")
        name, contents = claimed
        try:
            result = await self._receive(name, contents, series, identity(request))
        except BaseException:
            if (self.desk.uploads / name).exists():
                self.desk.unclaim(name)  # refused: the upload stays kept for another choice
            raise
        return self._answer(result)

    async def _spool(self, request: web.Request, contents: UploadContents, limit: int) -> None:
        """Write the request's file(s) into the upload folder, counting bytes against ``limit``."""
        received = 0
        parts: list[tuple[Path, str]] = []
        if request.content_type.startswith("multipart/"):
            reader = await request.multipart()
            while (part := await reader.next()) is not None:
                if part.filename is None:
                    continue
                path = contents.folder.parent / f".part{len(parts)}"
                received = await _write(part.read_chunk, path, received, limit)
                parts.append((path, part.filename))
        else:
            path = contents.folder.parent / ".body"
            received = await _write(request.content.read, path, received, limit)
            parts.append((path, "upload"))
        if received == 0:
            raise _fail(400, "The upload is empty. Send a zip of the CT's DICOM folder as the request body (or DICOM "
                             "files as multipart/form-data).")
        for path, name in parts:
            await _in_thread(add_received, path, name, contents)

    async def _receive(self, upload: str, contents: UploadContents, series: str | None, who: str):
        try:
            return await _in_thread(self.desk.receive, upload, contents, series, who)
        except DicomInputError as exc:  # the loader's message, about "the upload" rather than a server path
            message = str(exc).replace(f"'{contents.folder}'", "the upload").replace(str(contents.folder), "the upload")
            raise _fail(422, f"{message}{' ' + contents.note() if contents.note() else ''}") from exc

    def _answer(self, result: Received | SeriesChoice) -> web.Response:
        if isinstance(result, SeriesChoice):
            return web.json_response({"message": result.message, "status": 409, "upload": result.upload,
                                      "series": result.series, "choose": f"/api/uploads/{result.upload}/cases"},
                                     status=409)
        if self.on_received is not None:
            self.on_received(result)
        return web.json_response({"id": result.case_id, "version": result.job.version, "note": result.note},
                                 status=201)

    # --- cases ----------------------------------------------------------------------------------------

    async def list_cases(self, request: web.Request) -> web.Response:
        return web.json_response({"cases": self.desk.cases()})

    async def get_case(self, request: web.Request) -> web.Response:
        return web.json_response(self._case(request))

    async def download(self, request: web.Request) -> web.StreamResponse:
        case = self._case(request)
        number = self._version(case, request.match_info["version"])
        name = request.match_info["file"]
        if name not in self.desk.version_files(case["id"], number):
            raise _fail(404, f"Version {number} of case {case['id']} has no '{name}'; it has "
                             f"{', '.join(self.desk.version_files(case['id'], number))}.")
        path = self.desk.store.version_dir(case["id"], number) / name
        return web.FileResponse(path, headers={
            "Content-Type": MEDIA_TYPES[path.suffix],
            "Content-Disposition": f'attachment; filename="{case["id"]}-v{number}-{name}"',
            "Cache-Control": "no-store"})

    async def cancel(self, request: web.Request) -> web.Response:
        case = self._case(request)
        if not self.desk.cancel(case["id"], identity(request)):
            raise _fail(409, f"Case {case['id']} has no queued or running prediction to cancel.")
        return web.json_response({"id": case["id"], "cancelled": True})

    async def rerun(self, request: web.Request) -> web.Response:
        case = self._case(request)
        name = (await _json(request)).get("model") or next(iter(self.desk.models))
        if not isinstance(name, str) or name not in self.desk.models:
            raise _fail(400, f"Unknown model {str(name)[:80]!r}; send {{\"model\": NAME}} with one of "
                             f"{', '.join(self.desk.models)}.")
        job = self.desk.rerun(case["id"], name, identity(request))
        return web.json_response({"id": case["id"], "version": job.version, "model": name}, status=202)

    async def approve(self, request: web.Request) -> web.Response:
        case = self._case(request)
        body = await _json(request)
        version, signed = body.get("version", "latest"), body.get("by", "")
        if not isinstance(version, (str, int)) or isinstance(version, bool) or not isinstance(signed, str):
            raise _fail(400, 'Send {"version": n or "latest", "by": "your name"}.')
        number = self._version(case, str(version))
        try:
            released = await _in_thread(self.desk.approve, case["id"], number, signed, identity(request))
        except CTVError as exc:
            raise _fail(400, str(exc)) from exc
        return web.json_response({"id": case["id"], "approved_version": number,
                                  "released": [{"file": f, "destination": d} for f, d in released]})

    async def no_such_route(self, request: web.Request) -> web.Response:
        raise _fail(404, f"No such API call: {request.method} {request.path} (see the station's README section).")

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"models": list(self.desk.models)})

    def _case(self, request: web.Request) -> dict[str, Any]:
        case = self.desk.case(request.match_info["case"])
        if case is None:
            raise _fail(404, f"No case '{request.match_info['case']}' in this station (GET /api/cases lists them).")
        return case

    @staticmethod
    def _version(case: dict[str, Any], text: str) -> int:
        numbers = [v["number"] for v in case["versions"]]
        if text == "latest" and numbers:
            return numbers[-1]
        if text.isdigit() and int(text) in numbers:
            return int(text)
        raise _fail(404, f"Case {case['id']} has no version '{text}'" + (
            f"; its versions are {', '.join(map(str, numbers))} (or 'latest')." if numbers else
            f" yet (it is {case['status']}{': ' + case['message'] if case['message'] else ''})."))


async def _write(read, path: Path, received: int, limit: int) -> int:
    """Copy chunks from ``read`` into ``path``; returns the running byte count; refuses past ``limit``."""
    with open(path, "wb") as out:
        while chunk := await read(CHUNK):
            received += len(chunk)
            if received > limit:
                raise _fail(413, f"The upload is larger than the station's limit of {limit // MB} MB "
                                 "(ctv review --max-upload-mb).")
            out.write(chunk)
    return received


async def _in_thread(function, *args):
    """Run blocking work (unpacking, reading DICOM) off the event loop; upload errors become 4xx answers."""
    try:
        return await asyncio.get_running_loop().run_in_executor(None, function, *args)
    except UploadTooLargeError as exc:
        raise _fail(413, str(exc)) from exc
    except UploadError as exc:
        raise _fail(400, str(exc)) from exc


async def _json(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except ValueError as exc:
        raise _fail(400, f"The request body is not JSON ({exc}).") from exc
    if not isinstance(body, dict):
        raise _fail(400, "The request body must be a JSON object.")
    return body
