# The admin ASGI app called directly (scopes and channels in memory, a fake Backend): auth, routes, errors.
# Invariant: no network; every JSON body is checked against its schema in the app's own OpenAPI document.
from __future__ import annotations

import base64
import copy
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import jsonschema_rs
import pytest
import trio

from pipe_relay.admin import AdminApp
from pipe_relay.admin.openapi import document
from pipe_relay.core.transfers import TransferView

TOKEN = "s3cret-admin-token-0123456789"
METRICS = b"# HELP pipe_relay_up 1 while up\n# TYPE pipe_relay_up gauge\npipe_relay_up 1\n"
METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"
METHODS = ("GET", "HEAD", "DELETE", "POST", "PUT", "PATCH", "OPTIONS")
ROUTES = ("/metrics", "/api/v1/openapi.json", "/api/v1/transfers")
IDS = [f"{i:016x}" for i in (0x0A, 0x1B, 0x2C, 0x3D, 0x4E)]
UNKNOWN_ID = "ffffffffffffffff"
TRANSFERS = "/api/v1/transfers"


def _view(transfer_id: str, index: int) -> TransferView:
    return TransferView(
        id=transfer_id,
        state="active" if index % 2 else "pending",
        n=index + 1,
        sender=bool(index % 2),
        receivers=index,
        bytes=1000 * index,
        total=None if index % 3 else 4096,
        rate=12.345 * index,
        started_at=1_700_000_000.25 + index,
        protocol=(None, "http1", "h2c", "tls", "h2")[index],
        clients=tuple(f"10.0.0.{c}" for c in range(index)),
        worker=index % 2,
    )


class FakeBackend:
    def __init__(self) -> None:
        self.views = [_view(transfer_id, index) for index, transfer_id in enumerate(IDS)]
        self.terminated: list[str] = []
        self.scrapes = 0

    async def transfers(self) -> Sequence[TransferView]:
        await trio.lowlevel.checkpoint()
        return list(self.views)

    async def terminate(self, transfer_id: str) -> TransferView | None:
        await trio.lowlevel.checkpoint()
        self.terminated.append(transfer_id)
        found = next((v for v in self.views if v.id == transfer_id), None)
        if found is not None:
            self.views.remove(found)
        return found

    def metrics(self) -> tuple[bytes, str]:
        self.scrapes += 1
        return METRICS, METRICS_TYPE


@dataclass
class Answer:
    method: str
    path: str
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    messages: list[dict[str, Any]] = field(repr=False)

    def header(self, name: str) -> str | None:
        values = [v for n, v in self.headers if n == name]
        assert len(values) <= 1, f"{name} given {len(values)} times"
        return values[0] if values else None

    def json(self) -> Any:
        assert self.header("content-type") == "application/json"
        return json.loads(self.body)


def _scope(method: str, path: str, query: bytes, headers: Sequence[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode("utf-8"),
        "query_string": query,
        "root_path": "",
        "headers": list(headers),
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 9090),
        "state": {},
    }


def bearer(token: str = TOKEN, scheme: str = "Bearer") -> tuple[bytes, bytes]:
    return (b"authorization", f"{scheme} {token}".encode())


async def call(
    app: AdminApp,
    method: str,
    path: str,
    *,
    query: bytes = b"",
    auth: Sequence[tuple[bytes, bytes]] | None = None,
    body: bytes = b"",
) -> Answer:
    headers = [(b"host", b"127.0.0.1:9090"), *([bearer()] if auth is None else auth)]
    requests = [{"type": "http.request", "body": body, "more_body": False}]
    messages: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if requests:
            return requests.pop(0)
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    async def send(message: Any) -> None:
        await trio.lowlevel.checkpoint()
        messages.append(dict(message))

    with trio.fail_after(5):
        await app(_scope(method, path, query, headers), receive, send)
    assert [m["type"] for m in messages] == ["http.response.start", "http.response.body"]
    start, end = messages
    assert not end.get("more_body", False)
    for name, value in start["headers"]:
        assert isinstance(name, bytes) and isinstance(value, bytes)
        assert name == name.lower()
    answer = Answer(
        method,
        path,
        start["status"],
        [(n.decode("latin-1"), v.decode("latin-1")) for n, v in start["headers"]],
        end["body"],
        messages,
    )
    assert answer.header("cache-control") == "no-store"
    assert answer.header("x-content-type-options") == "nosniff"
    if method == "HEAD":
        assert answer.body == b""
    else:
        assert answer.header("content-length") == str(len(answer.body))
    # every answer's route, method and status is in the document, and its JSON body fits the schema there
    assert list(undocumented(answer)) == []
    return answer


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend()


@pytest.fixture
def app(backend: FakeBackend) -> AdminApp:
    return AdminApp(backend, TOKEN)


def assert_error(answer: Answer, status: int, code: str) -> dict[str, Any]:
    assert answer.status == status, answer
    if answer.method == "HEAD":
        return {}
    error = answer.json()
    assert set(error) == {"error", "message"}, error
    assert error["error"] == code
    assert isinstance(error["message"], str) and error["message"] and "\n" not in error["message"]
    return error


# the token --------------------------------------------------------------------------------------

EVERY_PATH = (*ROUTES, f"{TRANSFERS}/{IDS[0]}", f"{TRANSFERS}/{UNKNOWN_ID}", f"{TRANSFERS}/x", "/", "/nope")
REFUSED_AUTH = {
    "none": [],
    "wrong": [bearer("s3cret-admin-token-0123456780")],
    "prefix": [bearer(TOKEN[:-1])],
    "longer": [bearer(TOKEN + "9")],
    "empty": [(b"authorization", b"Bearer ")],
    "scheme-only": [(b"authorization", b"Bearer")],
    "basic-token": [bearer(TOKEN, "Basic")],
    "basic-user-token": [
        (b"authorization", b"Basic " + base64.b64encode(f"admin:{TOKEN}".encode())),
    ],
    "basic-token-b64": [(b"authorization", b"Basic " + base64.b64encode(TOKEN.encode()))],
    "no-scheme": [(b"authorization", TOKEN.encode())],
    "token-scheme": [bearer(TOKEN, "Token")],
    "tab": [(b"authorization", f"Bearer\t{TOKEN}".encode())],
    "as-query": [],  # (with ?access_token=: a token in a URL is no credential here)
    "other-header": [
        (b"x-admin-token", TOKEN.encode()),
        (b"proxy-authorization", f"Bearer {TOKEN}".encode()),
    ],
    "cookie": [(b"cookie", f"token={TOKEN}".encode())],
}


UNAUTHORIZED_BODY = (
    b'{"error":"UNAUTHORIZED","message":"Missing or wrong bearer token (Authorization: Bearer <token>)."}\n'
)


@pytest.mark.parametrize("how", REFUSED_AUTH)
async def test_without_the_token_every_request_gets_401(
    app: AdminApp, backend: FakeBackend, how: str
) -> None:
    query = f"access_token={TOKEN}".encode() if how == "as-query" else b""
    for method in METHODS:
        for path in EVERY_PATH:
            answer = await call(app, method, path, query=query, auth=REFUSED_AUTH[how])
            assert_error(answer, 401, "UNAUTHORIZED")
            assert answer.header("www-authenticate") == 'Bearer realm="pipe-relay admin"'
            assert answer.header("allow") is None  # (not even which methods a route has)
            assert answer.header("content-length") == str(len(UNAUTHORIZED_BODY))
            assert answer.body in (b"", UNAUTHORIZED_BODY)
    assert backend.scrapes == 0 and backend.terminated == []
    assert backend.views == FakeBackend().views


@pytest.mark.parametrize(
    "value",
    [f"bearer {TOKEN}", f"BEARER {TOKEN}", f"BeArEr {TOKEN}", f"Bearer  {TOKEN}", f"Bearer {TOKEN} "],
)
async def test_the_scheme_is_case_insensitive_and_spaces_around_the_token_are_allowed(
    app: AdminApp, value: str
) -> None:
    """RFC 7235 2.1: an auth-scheme is case-insensitive (RFC 6750's `Bearer` in any case)."""
    answer = await call(app, "GET", "/metrics", auth=[(b"authorization", value.encode())])
    assert answer.status == 200


async def test_the_header_name_in_any_case(app: AdminApp) -> None:
    answer = await call(app, "GET", "/metrics", auth=[(b"Authorization", f"Bearer {TOKEN}".encode())])
    assert answer.status == 200


def test_an_empty_token_is_refused() -> None:
    with pytest.raises(ValueError, match="token"):
        AdminApp(FakeBackend(), "")


def test_the_app_does_not_show_its_token() -> None:
    app = AdminApp(FakeBackend(), TOKEN)
    assert repr(app) == "<AdminApp>"
    assert TOKEN not in repr(vars(app) if hasattr(app, "__dict__") else app)


# routes -------------------------------------------------------------------------------------------


async def test_metrics(app: AdminApp, backend: FakeBackend) -> None:
    get = await call(app, "GET", "/metrics")
    assert (get.status, get.body, get.header("content-type")) == (200, METRICS, METRICS_TYPE)
    head = await call(app, "HEAD", "/metrics")
    assert (head.status, head.header("content-type")) == (200, METRICS_TYPE)
    assert head.header("content-length") == str(len(METRICS))
    assert backend.scrapes == 2


async def test_openapi_document(app: AdminApp) -> None:
    get = await call(app, "GET", "/api/v1/openapi.json")
    assert get.status == 200
    assert get.json() == document()
    head = await call(app, "HEAD", "/api/v1/openapi.json")
    assert head.status == 200 and head.header("content-length") == str(len(get.body))


async def test_list_transfers(app: AdminApp, backend: FakeBackend) -> None:
    get = await call(app, "GET", TRANSFERS)
    assert get.status == 200
    assert get.json() == {"transfers": [v.to_json() for v in backend.views], "next_cursor": None}
    head = await call(app, "HEAD", TRANSFERS)
    assert head.status == 200 and head.header("content-length") == str(len(get.body))


async def test_list_transfers_by_state(app: AdminApp, backend: FakeBackend) -> None:
    for state in ("pending", "active"):
        listing = (await call(app, "GET", TRANSFERS, query=f"state={state}".encode())).json()
        assert [t["id"] for t in listing["transfers"]] == [v.id for v in backend.views if v.state == state]
        assert all(t["state"] == state for t in listing["transfers"])


@pytest.mark.parametrize("limit", [1, 2, 3, 5, 1000])
async def test_walking_the_cursors(app: AdminApp, backend: FakeBackend, limit: int) -> None:
    seen: list[str] = []
    query = f"limit={limit}"
    for _ in range(len(IDS) + 1):
        listing = (await call(app, "GET", TRANSFERS, query=query.encode())).json()
        assert len(listing["transfers"]) <= limit
        seen += [t["id"] for t in listing["transfers"]]
        if listing["next_cursor"] is None:
            break
        assert listing["next_cursor"] == seen[-1]
        query = f"limit={limit}&cursor={listing['next_cursor']}"
    assert seen == sorted(IDS)


@pytest.mark.parametrize(
    "query",
    [
        b"limit=0",
        b"limit=1001",
        b"limit=x",
        b"limit=1e3",
        "limit=١٢".encode(),  # (raw UTF-8 in the query: decoded as latin-1, still no digits)
        b"limit=%D9%A1%D9%A2",
        b"state=done",
        b"cursor=ABC",
        b"cursor=0123456789ABCDEF",
        b"limit=1&limit=2",
        b"page=2",
        b"state",
        b"&&",
    ],
)
async def test_a_bad_list_query_is_400(app: AdminApp, query: bytes) -> None:
    for method in ("GET", "HEAD"):
        answer = await call(app, method, TRANSFERS, query=query)
        assert_error(answer, 400, "BAD_REQUEST")


async def test_one_transfer(app: AdminApp, backend: FakeBackend) -> None:
    wanted = backend.views[3]
    get = await call(app, "GET", f"{TRANSFERS}/{wanted.id}")
    assert get.status == 200 and get.json() == wanted.to_json()
    head = await call(app, "HEAD", f"{TRANSFERS}/{wanted.id}")
    assert head.status == 200 and head.header("content-length") == str(len(get.body))
    assert backend.terminated == []


async def test_an_unknown_transfer_is_404(app: AdminApp, backend: FakeBackend) -> None:
    for method in ("GET", "HEAD", "DELETE"):
        answer = await call(app, method, f"{TRANSFERS}/{UNKNOWN_ID}")
        error = assert_error(answer, 404, "TRANSFER_NOT_FOUND")
        assert method == "HEAD" or UNKNOWN_ID in error["message"]
    assert backend.terminated == [UNKNOWN_ID]


async def test_terminate(app: AdminApp, backend: FakeBackend) -> None:
    wanted = backend.views[1]
    ended = await call(app, "DELETE", f"{TRANSFERS}/{wanted.id}")
    assert ended.status == 200 and ended.json() == wanted.to_json()
    assert backend.terminated == [wanted.id]
    again = await call(app, "DELETE", f"{TRANSFERS}/{wanted.id}")
    assert_error(again, 404, "TRANSFER_NOT_FOUND")
    assert_error(await call(app, "GET", f"{TRANSFERS}/{wanted.id}"), 404, "TRANSFER_NOT_FOUND")


@pytest.mark.parametrize(
    "bad",
    ["x", "", "0123456789ABCDEF", "0123456789abcde", "0123456789abcdef0", f"{IDS[0]}/more", "..%2F"],
)
async def test_not_a_transfer_id_is_400(app: AdminApp, backend: FakeBackend, bad: str) -> None:
    for method in ("GET", "HEAD", "DELETE"):
        assert_error(await call(app, method, f"{TRANSFERS}/{bad}"), 400, "BAD_REQUEST")
    assert backend.terminated == []


async def test_an_id_with_a_trailing_newline_is_400(app: AdminApp, backend: FakeBackend) -> None:
    """(A `$` also matches before a final newline: the id is matched whole.)"""
    for method in ("GET", "DELETE"):
        assert_error(await call(app, method, f"{TRANSFERS}/{IDS[0]}\n"), 400, "BAD_REQUEST")
    assert backend.terminated == []
    assert_error(await call(app, "GET", TRANSFERS, query=f"cursor={IDS[0]}%0A".encode()), 400, "BAD_REQUEST")


ALLOWED = {
    "/metrics": "GET, HEAD",
    "/api/v1/openapi.json": "GET, HEAD",
    TRANSFERS: "GET, HEAD",
    f"{TRANSFERS}/{IDS[0]}": "GET, HEAD, DELETE",
    f"{TRANSFERS}/{UNKNOWN_ID}": "GET, HEAD, DELETE",
    f"{TRANSFERS}/x": "GET, HEAD, DELETE",
}


@pytest.mark.parametrize("path", ALLOWED)
@pytest.mark.parametrize("method", METHODS)
async def test_other_methods_are_405_with_allow(
    app: AdminApp, backend: FakeBackend, method: str, path: str
) -> None:
    allowed = ALLOWED[path]
    if method in allowed.split(", "):
        return  # (the tests above)
    answer = await call(app, method, path, body=b'{"state": "x"}')
    error = assert_error(answer, 405, "METHOD_NOT_ALLOWED")
    assert answer.header("allow") == allowed
    assert method in error["message"]
    assert backend.terminated == [] and backend.scrapes == 0


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/nope",
        "/metrics/",
        "/Metrics",
        "/api/v1/transfers/",
        "/api/v1",
        "/api/v2/transfers",
        "/openapi.json",
    ],
)
@pytest.mark.parametrize("method", METHODS)
async def test_unknown_paths_are_404(app: AdminApp, method: str, path: str) -> None:
    answer = await call(app, method, path)
    if path == "/api/v1/transfers/":  # (under the transfers: an empty id)
        if method in ("GET", "HEAD", "DELETE"):
            assert_error(answer, 400, "BAD_REQUEST")
        else:
            assert_error(answer, 405, "METHOD_NOT_ALLOWED")
        return
    assert_error(answer, 404, "NOT_FOUND")
    assert answer.header("allow") is None


async def test_no_answer_is_sent_to_a_websocket(app: AdminApp) -> None:
    sent: list[Any] = []

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {**_scope("GET", "/metrics", b"", [bearer()]), "type": "websocket"}
    with trio.fail_after(5):
        await app(scope, receive, send)
    assert sent == []


async def test_lifespan_completes(app: AdminApp) -> None:
    to_app, app_reads = trio.open_memory_channel[dict[str, Any]](2)
    app_says, from_app = trio.open_memory_channel[dict[str, Any]](2)

    async def send(message: Any) -> None:
        await app_says.send(dict(message))

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            done = trio.Event()

            async def run() -> None:
                await app(
                    {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, app_reads.receive, send
                )
                done.set()

            nursery.start_soon(run)
            await to_app.send({"type": "lifespan.startup"})
            assert await from_app.receive() == {"type": "lifespan.startup.complete"}
            assert not done.is_set()
            await to_app.send({"type": "lifespan.shutdown"})
            assert await from_app.receive() == {"type": "lifespan.shutdown.complete"}
            await done.wait()


# the OpenAPI document ----------------------------------------------------------------------------


def _openapi_30_validator() -> Any:
    """The OpenAPI 3.0 meta-schema (as schemathesis, a dev dependency, ships it)."""
    from schemathesis.specs.openapi.definitions import OPENAPI_30

    return jsonschema_rs.Draft4Validator(OPENAPI_30)


def test_the_document_is_valid_openapi_3_0() -> None:
    validator = _openapi_30_validator()
    doc = document()
    errors = [error.message for error in validator.iter_errors(doc)]
    assert errors == []
    assert doc["openapi"].startswith("3.0.")
    broken = copy.deepcopy(doc)
    del broken["paths"]["/metrics"]["get"]["responses"]["200"]["description"]
    assert not validator.is_valid(broken)  # (the validator does look)
    json.dumps(doc)  # (plain JSON)


def _json_schema(node: Any, doc: dict[str, Any]) -> Any:
    """An OpenAPI 3.0 schema as JSON Schema: `$ref`s inlined, `nullable` as a null alternative."""
    if isinstance(node, list):
        return [_json_schema(item, doc) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target: Any = doc
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        return _json_schema(target, doc)
    converted = {key: _json_schema(value, doc) for key, value in node.items() if key != "nullable"}
    if node.get("nullable"):
        return {"anyOf": [converted, {"type": "null"}]}
    return converted


def _template(path: str) -> str | None:
    """The document's path for a request path (None: no route)."""
    if path in ROUTES:
        return path
    if path.startswith(TRANSFERS + "/"):  # (as the app reads it: even "" and "a/b" are ids, not valid)
        return TRANSFERS + "/{id}"
    return None


def undocumented(answer: Answer) -> Iterator[str]:
    """What of `answer` the document does not say (nothing: all of it is documented)."""
    doc = document()
    template = _template(answer.path)
    if template is None:
        assert answer.status in (401, 404), answer  # (no route: the token, else 404)
        return
    item = doc["paths"][template]
    operations = {m.upper() for m in item if m != "parameters"}
    if answer.status == 405:  # (not an operation: the document's operations are what `allow` says)
        assert operations == set((answer.header("allow") or "").split(", ")), answer
        return
    if answer.status == 401 and answer.method not in operations:
        return  # (the token is asked first, on any method)
    method = answer.method.lower()
    if method not in item:
        yield f"{answer.method} {template}"
        return
    if str(answer.status) not in item[method]["responses"]:
        yield f"{answer.method} {template} {answer.status}"
        return
    # HEAD is GET without the body (RFC 9110 9.3.2): its content type is GET's
    responses = item["get" if method == "head" else method]["responses"]
    content = responses[str(answer.status)].get("content")
    media = (answer.header("content-type") or "").partition(";")[0]
    if content is not None and media not in content:
        yield f"{answer.method} {template} {answer.status} {media}"
    if answer.method == "HEAD" or content is None:
        return
    schema = content[media].get("schema")
    if schema is not None:
        validator = jsonschema_rs.Draft4Validator(_json_schema(schema, doc), validate_formats=True)
        for error in validator.iter_errors(json.loads(answer.body)):
            yield f"{answer.method} {answer.path} {answer.status}: {error.message}"


def test_the_schema_check_catches_a_wrong_body() -> None:
    """(The checker below is no rubber stamp.)"""
    good = _view(IDS[0], 1).to_json()
    for change in (
        {"id": "XYZ"},
        {"started_at": "yesterday"},
        {"rate": -1},
        {"extra": 1},
        {"protocol": "h3"},
    ):
        bad = {**good, **change}
        body = json.dumps(bad).encode()
        answer = Answer("GET", f"{TRANSFERS}/{IDS[0]}", 200, [("content-type", "application/json")], body, [])
        assert list(undocumented(answer)), change
    answer = Answer("GET", f"{TRANSFERS}/{IDS[0]}", 200, [("content-type", "application/json")], b"", [])
    answer.body = json.dumps(good).encode()
    assert list(undocumented(answer)) == []
    nulls = {**good, "protocol": None, "total": None}
    answer.body = json.dumps(nulls).encode()
    assert list(undocumented(answer)) == []
