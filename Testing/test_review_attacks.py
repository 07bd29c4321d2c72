"""``ctv review`` against a hostile page and hostile uploads (issue 26), each attack replayed with raw HTTP against
the real station process, with the defended outcome asserted:

* a foreign page's POSTs (text/plain, cross-site, another port of this machine, ``Origin: null``) and websocket
  upgrades: 403, with and without a token; the station's own pages (same origin) pass;
* wslink's websocket secret: random at every start, the well-known default refused;
* the audit log: the authenticated identity (the token's name), not the name in the request body;
* a zip of zeros: refused after a look at the first bytes, for a fraction of a second of CPU;
* killed uploads (the client, or the station itself): nothing left behind;
* the small ones: a member name that is not UTF-8, a model that is a list, concurrent choices of one upload, a
  wrong choice, an over-long member name, a series "UID" that is a path.
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import os
import secrets as random_secrets
import shutil
import signal
import socket
import threading
import time
import zipfile
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pydicom
import pytest
from pydicom.uid import generate_uid
from review_support import TOKEN, Station, zip_folder

from ctv_core.phantom import ScanSettings, make_phantom
from ctv_core.service.store import CaseStore

pytestmark = pytest.mark.xdist_group("review-attacks")
PHANTOM = ScanSettings(matrix=256, slice_thickness_mm=5.0)
ALICE, BOB = "alice-token-0123456789abcdef", "bob-token-0123456789abcdef0"
EVIL = "https://evil.example"


@pytest.fixture(scope="module")
def patient(tmp_path_factory) -> Path:
    return make_phantom(tmp_path_factory.mktemp("attack_upload") / "p", seed=33, settings=PHANTOM).ct_dir


@pytest.fixture(scope="module")
def with_token(tmp_path_factory):
    root = tmp_path_factory.mktemp("review_attacks_token")
    tokens = root / "tokens"
    tokens.write_text(f"{TOKEN}\nalice:{ALICE}\nbob: {BOB}\n")
    station = Station(root / "data", "--token-file", str(tokens), "--max-upload-cpu-seconds", "60", token=None)
    station.start()
    station.token = TOKEN
    yield station
    station.stop()


@pytest.fixture(scope="module")
def without_token(tmp_path_factory):
    station = Station(tmp_path_factory.mktemp("review_attacks_open") / "data", token=None).start()
    yield station
    station.stop()


def _raw(station: Station, method: str, path: str, headers: dict, body: bytes = b"") -> tuple[int, dict, bytes]:
    """A request exactly as given (no redirects followed, nothing added but Host and the length)."""
    connection = http.client.HTTPConnection("127.0.0.1", station.port, timeout=60)
    connection.request(method, path, body=body, headers=headers)
    answer = connection.getresponse()
    result = answer.status, dict(answer.headers), answer.read()
    connection.close()
    return result


def _upgrade(origin: str | None = None, **extra) -> dict:
    headers = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
               "Sec-WebSocket-Key": base64.b64encode(random_secrets.token_bytes(16)).decode()}
    if origin is not None:
        headers["Origin"] = origin
    return {**headers, **extra}


def _a_case(station: Station) -> str:
    """A case with one finished version, made in the station's store directly."""
    store = CaseStore(station.data)
    case_id = store.new_case("dicom", sender="SCANNER")
    store.queue_job(case_id, queue="node")
    job = store.claim_job("node")
    version = store.version_dir(case_id, job.version)
    version.mkdir(parents=True)
    (version / "report.json").write_text("{}")
    store.finish_job(job, model="m 1", outbox=[("rtstruct.dcm", "TPS@127.0.0.1:1")], hold=True)
    return case_id


@pytest.mark.parametrize("which", ["with_token", "without_token"])
def test_a_foreign_page_can_neither_change_nor_connect_and_the_own_pages_can(which, request):
    station: Station = request.getfixturevalue(which)
    own = f"http://127.0.0.1:{station.port}"
    auth = {"Authorization": f"Bearer {station.token}"} if station.token else {}
    case_id = _a_case(station)
    cases_before = sorted(p.name for p in (station.data / "cases").iterdir())
    foreign = [{"Origin": EVIL}, {"Origin": "null"}, {"Origin": f"http://127.0.0.1:{station.port + 1}"},
               {"Origin": f"http://localhost:{station.port}"}, {"Sec-Fetch-Site": "cross-site"},
               {"Sec-Fetch-Site": "same-site", "Origin": own}]
    for headers in foreign:
        for method, path, body in (("POST", "/api/cases", b"PK\x03\x04 a zip, says text/plain"),
                                   ("POST", f"/api/cases/{case_id}/approve", b'{"version": "latest", "by": "x"}'),
                                   ("POST", f"/api/cases/{case_id}/cancel", b""),
                                   ("POST", f"/api/cases/{case_id}/runs", b"{}")):
            status, _, answer = _raw(station, method, path, {**auth, **headers, "Content-Type": "text/plain"}, body)
            assert status == 403 and b"another web site" in answer, (headers, path, status, answer)
        status, _, _ = _raw(station, "GET", "/ws", {**auth, **_upgrade(**headers)})
        assert status == 403, headers
    assert sorted(p.name for p in (station.data / "cases").iterdir()) == cases_before  # nothing created
    assert CaseStore(station.data).case(case_id)["approved_version"] is None  # nothing approved
    # the station's own page: same origin, as a browser sends it
    own_headers = {**auth, "Origin": own, "Sec-Fetch-Site": "same-origin"}
    status, _, answer = _raw(station, "POST", f"/api/cases/{case_id}/approve", {**own_headers,
                             "Content-Type": "application/json"}, b'{"version": "latest", "by": "dr own"}')
    assert status == 200, answer
    status, _, _ = _raw(station, "GET", "/ws", {**auth, **_upgrade(own, **{"Sec-Fetch-Site": "same-origin"})})
    assert status == 101
    status, headers, _ = _raw(station, "GET", "/api/cases", auth)
    assert status == 200 and headers["X-Frame-Options"] == "DENY" and "frame-ancestors 'none'" in \
        headers["Content-Security-Policy"] and headers["Cross-Origin-Resource-Policy"] == "same-origin"


def _websocket_hello(station: Station, secret: str) -> dict:
    """wslink's hello with ``secret`` on the station's websocket, from its own origin; the answer."""
    import asyncio

    import aiohttp
    import msgpack
    from wslink.chunking import UnChunker, generate_chunks

    async def hello() -> dict:
        headers = {"Origin": f"http://127.0.0.1:{station.port}"}
        if station.token:
            headers["Authorization"] = f"Bearer {station.token}"
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(f"http://127.0.0.1:{station.port}/ws", headers=headers) as ws:
                message = msgpack.packb({"wslink": "1.0", "id": "system:c0:0", "method": "wslink.hello",
                                         "args": [{"secret": secret}], "kwargs": {}})
                for chunk in generate_chunks(message, 0):
                    await ws.send_bytes(chunk)
                unchunker = UnChunker()
                while True:
                    answer = await asyncio.wait_for(ws.receive(), 30)
                    whole = unchunker.process_chunk(answer.data)
                    if whole is not None:
                        return whole

    return asyncio.run(hello())


def test_the_websocket_secret_is_new_at_every_start_and_the_default_is_refused(with_token, without_token):
    found = []
    for station in (with_token, without_token):
        status, headers, _ = _raw(station, "GET", "/?token=" + TOKEN if station.token else "/", {})
        assert status == 302
        secret = parse_qs(urlsplit(headers["Location"]).query)["secret"][0]
        assert len(secret) >= 32 and secret != "wslink-secret"
        assert "error" in _websocket_hello(station, "wslink-secret")  # the default every trame app knows
        assert "clientID" in _websocket_hello(station, secret)["result"]
        found.append(secret)
    assert found[0] != found[1]  # two starts, two secrets


def test_the_audit_log_records_who_the_token_says_not_the_name_in_the_body(with_token):
    case_id = _a_case(with_token)
    for token, who in ((ALICE, "alice"), (BOB, "bob"), (TOKEN, "the station token")):
        status, answer, _ = with_token.call("POST", f"/api/cases/{case_id}/approve",
                                            {"version": "latest", "by": "Chief Physicist"}, token=token)
        assert status == 200, answer
        line = [line for line in (with_token.data / "audit.log").read_text().splitlines()
                if f"approve case {case_id}" in line][-1]
        assert f"by {who} at 127.0.0.1 (signed 'Chief Physicist')" in line, line


def _zeros_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zipped:
        zipped.writestr("ct/zeros.dcm", bytes(100 << 20))
        zipped.writestr("ct/preamble-then-zeros.dcm", bytes(128) + b"DICM" + bytes(20 << 20))
    return buffer.getvalue()


def _cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process so far (Linux /proc), seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_a_zip_of_zeros_is_refused_without_being_parsed(with_token):
    archive = _zeros_zip()
    assert len(archive) < 300_000
    before = _cpu_seconds(with_token.process.pid)
    status, answer = with_token.upload(archive)
    spent = _cpu_seconds(with_token.process.pid) - before
    assert status == 422 and "No DICOM files found in the upload" in answer["message"], answer
    # unpacking 120 MB is all it costs (before: every member parsed with force=True, 24.6 s of CPU per 100 MB)
    assert spent < 5.0, spent


def test_killed_uploads_leave_nothing_behind(tmp_path, patient):
    station = Station(tmp_path / "data").start()
    try:
        uploads = station.data / "uploads"
        # the client dies in the middle of its upload
        connection = socket.create_connection(("127.0.0.1", station.port))
        connection.sendall(f"POST /api/cases HTTP/1.1\r\nHost: 127.0.0.1:{station.port}\r\nAuthorization: Bearer "
                           f"{TOKEN}\r\nContent-Type: application/zip\r\nContent-Length: {1 << 30}\r\n\r\n".encode())
        connection.sendall(bytes(8 << 20))
        while not any(p.is_file() for p in uploads.rglob("*")):
            time.sleep(0.1)
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        connection.close()  # a reset, as when the client process is killed
        deadline = time.monotonic() + 30
        while any(uploads.iterdir()) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(uploads.iterdir())
        # the station dies in the middle of an upload: the next start removes what it left
        connection = socket.create_connection(("127.0.0.1", station.port))
        connection.sendall(f"POST /api/cases HTTP/1.1\r\nHost: 127.0.0.1:{station.port}\r\nAuthorization: Bearer "
                           f"{TOKEN}\r\nContent-Type: application/zip\r\nContent-Length: {1 << 30}\r\n\r\n".encode())
        connection.sendall(bytes(8 << 20))
        while not any(p.is_file() for p in uploads.rglob("*")):
            time.sleep(0.1)
        station.process.send_signal(signal.SIGKILL)
        station.process.wait()
        connection.close()
        assert any(uploads.iterdir())
        station.start()
        assert not any(uploads.iterdir())
        assert "'removed_uploads': 1" in (station.data / "audit.log").read_text().splitlines()[-1]
    finally:
        station.stop()


def _zip_with_raw_name(name: bytes, data: bytes = b"x") -> bytes:
    """A zip whose one member's name is ``name`` as bytes, flagged UTF-8 (whatever the bytes are)."""
    buffer = io.BytesIO()
    placeholder = "N" * len(name)
    with zipfile.ZipFile(buffer, "w") as zipped:
        zipped.writestr(placeholder, data)
    raw = bytearray(buffer.getvalue().replace(placeholder.encode(), name))
    central = raw.rfind(b"PK\x01\x02")
    for flags in (6, central + 8):  # general purpose flags of the local and the central header: bit 11, UTF-8
        raw[flags + 1] |= 0x08
    return bytes(raw)


def test_malformed_requests_get_a_4xx_that_names_the_problem_and_no_server_path(with_token):
    station = with_token
    case_id = _a_case(station)
    checks = {
        "not UTF-8": (station.upload(_zip_with_raw_name(b"ct/\xff\xfe.dcm")), 400, "not valid UTF-8"),
        "long name": (station.upload(zip_folder(Path(__file__).parent, ("ct/" + "n" * 300 + ".dcm", b"x"))), 400,
                      "longer than 255 bytes"),
        "a list for a model": (station.call("POST", f"/api/cases/{case_id}/runs", {"model": ["a"]})[:2], 400,
                               "Unknown model"),
        "a list for a version": (station.call("POST", f"/api/cases/{case_id}/approve",
                                              {"version": [1], "by": "x"})[:2], 400, '"version"'),
        "a path for a series": (station.upload(b"PK", series="../../etc"), 400, "not a DICOM UID"),
    }
    for what, ((status, answer), expected, words) in checks.items():
        assert status == expected and words in answer["message"], (what, status, answer)
        assert str(station.data) not in answer["message"] and "/tmp/" not in answer["message"], (what, answer)
    assert not any((station.data / "uploads").iterdir())


def test_one_choice_of_a_kept_upload_at_a_time_and_a_wrong_choice_keeps_it(with_token, patient, tmp_path):
    station = with_token
    both = tmp_path / "both"
    shutil.copytree(patient, both / "a")
    (both / "b").mkdir()
    series_uid = generate_uid()
    for path in sorted(patient.iterdir()):  # the same slices as another series
        ds = pydicom.dcmread(path)
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.save_as(both / "b" / path.name)
    status, choice, _ = station.call("POST", "/api/cases", zip_folder(both),
                                     headers={"Content-Type": "application/zip"})
    assert status == 409, choice
    status, answer, _ = station.call("POST", choice["choose"], {"series": "1.2.3.4.5"})  # not one of them
    assert status == 422, answer
    status, answer, _ = station.call("POST", choice["choose"], {"series": "../x"})
    assert status == 400, answer
    cases_before = len(list((station.data / "cases").iterdir()))
    uid = choice["series"][0]["uid"]
    results: list[tuple[int, dict]] = []

    def choose() -> None:
        results.append(station.call("POST", choice["choose"], {"series": uid})[:2])

    threads = [threading.Thread(target=choose) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(status for status, _ in results) in ([201, 404, 404], [201, 404, 409], [201, 409, 409]), results
    assert all(status == 201 or "upload" in answer["message"].lower() for status, answer in results), results
    folders = list((station.data / "cases").iterdir())
    assert len(folders) == cases_before + 1, (folders, results)
    assert all(any(f.iterdir()) for f in folders), [(f, list(f.rglob("*"))) for f in folders]  # none empty
    assert json.loads(json.dumps(results))  # every answer was JSON


@pytest.mark.parametrize("secret", ["-starts-with-a-dash", "--authKey", "plain_secret"])
def test_a_websocket_secret_that_starts_with_a_dash_is_still_the_secret(secret):
    # secrets.token_urlsafe starts with "-" one time in 64: the station then failed to start
    # ("argument --authKey: expected one argument").
    from trame.app import get_server

    from ctv_core.service.review.server import _quiet_trame_command_line

    server = get_server(f"secret-{random_secrets.token_hex(4)}", client_type="vue3")
    _quiet_trame_command_line(server, secret)
    parsed, _ = server.cli.parse_known_args()
    assert parsed.authKey == secret
