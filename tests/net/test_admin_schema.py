# The admin API against its own OpenAPI document: schemathesis calls every operation of a live server's
# admin listener (generated cases, valid and invalid, and the real transfers' ids) and checks each answer;
# and the same checks do fail on an answer that breaks the document.
# Invariant: schemathesis' Python API only (never its pytest plugin), in a worker thread so trio stays free;
# a bounded, derandomized number of examples, no example database; the server process is stopped after.
from __future__ import annotations

import copy
import json
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import requests
import schemathesis
import trio
from hypothesis import given
from schemathesis import GenerationMode
from schemathesis.core.result import Ok
from schemathesis.errors import FailureGroup
from schemathesis.openapi.checks import JsonSchemaError, UndefinedStatusCode

from pipe_relay.admin.openapi import document
from tests.admin_client import TOKEN, AdminConnection, AdminServer, admin_server, keys_owned_by, poll
from tests.clients import CurlResult, curl_into
from tests.fuzzing import fuzz_settings

HEADERS = {"Authorization": f"Bearer {TOKEN}"}
EXAMPLES = 10
"""Generated cases per operation and generation mode (invalid ones: where it has parameters)."""
TIMEOUT = 5.0
"""Seconds one call of schemathesis' may take."""
OPERATIONS = [
    "GET /metrics",
    "HEAD /metrics",
    "GET /api/v1/openapi.json",
    "HEAD /api/v1/openapi.json",
    "GET /api/v1/transfers",
    "HEAD /api/v1/transfers",
    "GET /api/v1/transfers/{id}",
    "HEAD /api/v1/transfers/{id}",
    "DELETE /api/v1/transfers/{id}",
]
T = TypeVar("T")


async def _in_thread(function: Callable[[], T]) -> T:
    """schemathesis' calls block (requests): in a thread, abandoned if the test's deadline passes."""
    return await trio.to_thread.run_sync(function, abandon_on_cancel=True)


def _served_document(server: AdminServer) -> dict[str, Any]:
    got = requests.get(server.admin_url + "/api/v1/openapi.json", headers=HEADERS, timeout=TIMEOUT)
    assert got.status_code == 200, got.text
    served: dict[str, Any] = got.json()
    return served


def _conformance(server: AdminServer, ids: list[str]) -> tuple[list[str], dict[str, str]]:
    """Every operation of the served document: EXAMPLES generated cases of each mode (valid, and
    invalid where it has parameters) called and checked (status, content type, headers, body
    schema, auth, methods...); then a page of one, and each real transfer shown and ended. The
    operations' labels, and what failed by label."""
    served = _served_document(server)
    assert served == json.loads(json.dumps(document()))  # (the app serves the module's document)
    schema = schemathesis.openapi.from_dict(served)
    schema.validate()  # (it is an OpenAPI 3.0 document)
    base = server.admin_url
    call = partial(schemathesis.Case.call_and_validate, base_url=base, headers=HEADERS, timeout=TIMEOUT)
    labels: list[str] = []
    failures: dict[str, str] = {}
    operations = {}
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result
        operation = result.ok()
        labels.append(operation.label)
        operations[operation.label] = operation
        modes = [GenerationMode.POSITIVE]
        if len(operation.path_parameters) + len(operation.query) and operation.method.upper() != "HEAD":
            modes.append(GenerationMode.NEGATIVE)  # (something to get wrong; HEAD's are GET's)
        for mode in modes:

            @fuzz_settings(EXAMPLES)
            @given(case=operation.as_strategy(generation_mode=mode))
            def check(case: schemathesis.Case[Any]) -> None:
                call(case)

            try:
                check()
            except (Exception, FailureGroup) as exc:
                failures[f"{operation.label} ({mode.value})"] = str(exc)
    listing = operations["GET /api/v1/transfers"]
    page = call(listing.Case(query={"limit": 1}))
    assert page.status_code == 200 and page.json()["next_cursor"] is not None, page.text
    for ident in ids:
        for label in ("GET /api/v1/transfers/{id}", "DELETE /api/v1/transfers/{id}"):
            shown = call(operations[label].Case(path_parameters={"id": ident}))
            assert shown.status_code == 200 and shown.json()["id"] == ident, (label, shown.text)
    return labels, failures


async def _until_listed(admin: AdminConnection, count: int) -> list[dict[str, object]]:
    """Until `count` transfers are listed, each active one with bytes moved."""

    def moving(listed: list[dict[str, object]]) -> int:
        return sum(t["state"] == "pending" or int(str(t["bytes"])) > 0 for t in listed)

    listed = await poll(admin.transfers, lambda listed: moving(listed) >= count)
    assert moving(listed) == count, listed
    return listed


async def test_every_admin_operation_answers_as_its_openapi_document_says(tmp_path: Path) -> None:
    """A receiver waits on a key of each worker and a transfer runs (its sender stalled) while
    schemathesis calls every operation: no check fails, and the real transfers are shown and ended."""
    with trio.fail_after(40):
        async with admin_server(tmp_path) as server:
            admin = await server.connect()
            host, port = server.url.removeprefix("http://").rsplit(":", 1)
            got: dict[str, CurlResult] = {}
            async with trio.open_nursery() as nursery:
                for owner in (0, 1):
                    key = keys_owned_by(owner, 1, "schema-waiting")[0]
                    nursery.start_soon(curl_into, got, str(owner), server.url + key)
                nursery.start_soon(curl_into, got, "active", server.url + "/schema-active")
                async with await trio.open_tcp_stream(host, int(port)) as sender:
                    head = b"PUT /schema-active HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                    await sender.send_all(head + b"400\r\n" + b"x" * 0x400 + b"\r\n")
                    listed = await _until_listed(admin, 3)
                    ids = [str(t["id"]) for t in listed]
                    labels, failures = await _in_thread(partial(_conformance, server, ids))
    assert sorted(labels) == sorted(OPERATIONS)
    assert failures == {}, "\n\n".join(f"{label}:\n{text}" for label, text in failures.items())
    assert sorted(str(t["state"]) for t in listed) == ["active", "pending", "pending"], listed
    for name in ("0", "1"):  # (each waiting receiver was ended by the DELETE: 410, the operator's line)
        assert got[name].stdout == b"[ERROR] Transfer terminated by the operator.\n", got[name]
    assert got["active"].returncode != 0, got["active"]  # (and the running one cut)


def _tampered(
    response: schemathesis.Response, content: bytes, status: int | None = None
) -> schemathesis.Response:
    return schemathesis.Response(
        status_code=response.status_code if status is None else status,
        headers=response.headers,
        content=content,
        request=response.request,
        elapsed=response.elapsed,
        verify=response.verify,
    )


def _failures_of(check: Callable[[], object]) -> list[type]:
    try:
        check()
    except FailureGroup as group:
        return [type(failure) for failure in group.exceptions]
    raise AssertionError("the check passed")


def _breaches(server: AdminServer) -> dict[str, list[type]]:
    """What schemathesis reports of answers that break the document: a listed transfer with one
    more field, one with a field of the wrong type, an undocumented status; and the live server
    checked against a document whose transfers lack their `worker` field."""
    served = _served_document(server)
    schema = schemathesis.openapi.from_dict(served)
    base = server.admin_url
    listing = schema["/api/v1/transfers"]["GET"]
    case = listing.Case()
    response = case.call(base_url=base, headers=HEADERS, timeout=TIMEOUT)
    case.validate_response(response, headers=HEADERS)  # (the real answer passes)
    body = response.json()
    assert body["transfers"], body
    more = copy.deepcopy(body)
    more["transfers"][0]["path"] = "/the-secret-path"
    wrong = copy.deepcopy(body)
    wrong["transfers"][0]["bytes"] = "12"
    breaches = {
        "extra field": _failures_of(
            lambda: case.validate_response(_tampered(response, json.dumps(more).encode()), headers=HEADERS)
        ),
        "wrong type": _failures_of(
            lambda: case.validate_response(_tampered(response, json.dumps(wrong).encode()), headers=HEADERS)
        ),
        "status 500": _failures_of(
            lambda: case.validate_response(_tampered(response, response.content, 500), headers=HEADERS)
        ),
    }
    narrow = copy.deepcopy(served)
    del narrow["components"]["schemas"]["Transfer"]["properties"]["worker"]
    narrow["components"]["schemas"]["Transfer"]["required"].remove("worker")
    live = schemathesis.openapi.from_dict(narrow)["/api/v1/transfers"]["GET"].Case()
    breaches["document without worker"] = _failures_of(
        lambda: live.call_and_validate(base_url=base, headers=HEADERS, timeout=TIMEOUT)
    )
    return breaches


async def test_the_checks_fail_on_answers_that_break_the_document(tmp_path: Path) -> None:
    """The conformance test above is not blind: the same checks reject answers that break it."""
    with trio.fail_after(20):
        async with admin_server(tmp_path, workers=1) as server:
            admin = await server.connect()
            got: dict[str, CurlResult] = {}
            async with trio.open_nursery() as nursery:
                nursery.start_soon(curl_into, got, "waiting", server.url + "/schema-breach")
                await _until_listed(admin, 1)
                breaches = await _in_thread(partial(_breaches, server))
                nursery.cancel_scope.cancel()
    assert JsonSchemaError in breaches["extra field"], breaches
    assert JsonSchemaError in breaches["wrong type"], breaches
    assert UndefinedStatusCode in breaches["status 500"], breaches
    assert JsonSchemaError in breaches["document without worker"], breaches
