# The admin API's OpenAPI 3.0 document (served at /api/v1/openapi.json, and what schemathesis tests against).
# Invariant: it describes every admin route, status and JSON shape the app in `app.py` can answer.
from __future__ import annotations

from typing import Any

from .._version import __version__
from ..core.transfers import DEFAULT_LIMIT, MAX_LIMIT, STATES

_ID = {"type": "string", "pattern": "^[0-9a-f]{16}$"}
_ERROR_CODES = [
    "UNAUTHORIZED",
    "NOT_FOUND",
    "METHOD_NOT_ALLOWED",
    "BAD_REQUEST",
    "TRANSFER_NOT_FOUND",
]


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _json(description: str, ref: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}},
    }


_UNAUTHORIZED = _error("No token, or a wrong one.")
_TRANSFER = {
    "type": "object",
    "additionalProperties": False,
    "required": [
        "id",
        "state",
        "n",
        "sender",
        "receivers",
        "bytes",
        "total",
        "rate",
        "started_at",
        "protocol",
        "clients",
        "worker",
        "user",
    ],
    "properties": {
        "id": {**_ID, "description": "A keyed hash of the pipe's path (never the path)."},
        "state": {"type": "string", "enum": list(STATES)},
        "n": {"type": "integer", "minimum": 1, "description": "Receivers the pipe is for."},
        "sender": {"type": "boolean", "description": "Is its sender there?"},
        "receivers": {"type": "integer", "minimum": 0, "description": "Receivers connected."},
        "bytes": {"type": "integer", "minimum": 0, "description": "Body bytes moved so far."},
        "total": {
            "type": "integer",
            "minimum": 0,
            "nullable": True,
            "description": "Content-Length, if known.",
        },
        "rate": {
            "type": "number",
            "minimum": 0,
            "description": "Bytes a second, over the last second or so.",
        },
        "started_at": {"type": "string", "format": "date-time", "description": "When its first party came."},
        "protocol": {
            "type": "string",
            "enum": ["http1", "tls", "h2", "h2c", "unix"],
            "nullable": True,
            "description": "Its sender's protocol (else its first receiver's).",
        },
        "clients": {"type": "array", "items": {"type": "string"}, "description": "Its parties' addresses."},
        "worker": {"type": "integer", "minimum": 0, "description": "The worker that owns the pipe."},
        "user": {
            "type": "string",
            "nullable": True,
            "description": "The user its sender named (with --policy), else its first party's.",
        },
    },
}


def _with_head(item: dict[str, Any]) -> dict[str, Any]:
    """A path item whose GET also answers HEAD (as the app does): the same parameters and statuses, no
    body."""
    get = item["get"]
    head = {
        "summary": f"{get['summary']} Headers only.",
        "responses": {
            status: {"description": answer["description"]} for status, answer in get["responses"].items()
        },
    }
    if "parameters" in get:
        head["parameters"] = get["parameters"]
    return {**item, "head": head}


def document() -> dict[str, Any]:
    transfer_id = {"name": "id", "in": "path", "required": True, "schema": _ID}
    described = _paths(transfer_id)
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "pipe-relay admin API",
            "version": __version__,
            "description": "Metrics and live transfers of a pipe-relay server. Every route needs "
            "`Authorization: Bearer <token>`.",
        },
        "security": [{"bearer": []}],
        "paths": {path: _with_head(item) for path, item in described.items()},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Transfer": _TRANSFER,
                "TransferList": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["transfers", "next_cursor"],
                    "properties": {
                        "transfers": {"type": "array", "items": {"$ref": "#/components/schemas/Transfer"}},
                        "next_cursor": {**_ID, "nullable": True},
                    },
                },
                "Error": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["error", "message"],
                    "properties": {
                        "error": {"type": "string", "enum": _ERROR_CODES},
                        "message": {"type": "string"},
                    },
                },
            },
        },
    }


def _paths(transfer_id: dict[str, Any]) -> dict[str, Any]:
    return {
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics of the whole server (every worker).",
                "responses": {
                    "200": {"description": "The text exposition format.", "content": {"text/plain": {}}},
                    "401": _UNAUTHORIZED,
                },
            }
        },
        "/api/v1/openapi.json": {
            "get": {
                "summary": "This document.",
                "responses": {"200": {"description": "OpenAPI 3.0"}, "401": _UNAUTHORIZED},
            }
        },
        "/api/v1/transfers": {
            "get": {
                "summary": "Pending and active pipes, ordered by id.",
                "parameters": [
                    {"name": "state", "in": "query", "schema": {"type": "string", "enum": list(STATES)}},
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {
                            "type": "integer",
                            "minimum": 1,
                            "maximum": MAX_LIMIT,
                            "default": DEFAULT_LIMIT,
                        },
                    },
                    {
                        "name": "cursor",
                        "in": "query",
                        "description": "The `next_cursor` of the page before.",
                        "schema": _ID,
                    },
                ],
                "responses": {
                    "200": _json("A page of transfers.", "TransferList"),
                    "400": _error("A bad query parameter."),
                    "401": _UNAUTHORIZED,
                },
            }
        },
        "/api/v1/transfers/{id}": {
            "parameters": [transfer_id],
            "get": {
                "summary": "One transfer.",
                "responses": {
                    "200": _json("The transfer.", "Transfer"),
                    "400": _error("Not a transfer id."),
                    "401": _UNAUTHORIZED,
                    "404": _error("No such transfer (it may have ended)."),
                },
            },
            "delete": {
                "summary": "Terminate the transfer: its sender reads `[ERROR] Transfer terminated by the "
                "operator.`, its receivers are cut, waiting parties get 410 TERMINATED.",
                "responses": {
                    "200": _json("The transfer as it was when it was ended.", "Transfer"),
                    "400": _error("Not a transfer id."),
                    "401": _UNAUTHORIZED,
                    "404": _error("No such transfer (it may have ended)."),
                },
            },
        },
    }
