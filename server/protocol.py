"""Every request gets an answer: JSON-RPC errors for messages pygls would drop.

pygls 2.1 structures each incoming message with ``json.loads(object_hook=structure_message)``; when a
request's params do not fit the method's type (a missing ``context``, ``"line": "x"``) structuring
raises, the reader loop logs it and the request is never answered, so the client waits forever.
Messages that are not JSON-RPC 2.0 (no ``jsonrpc`` member, another version, a batch, a bare value)
and bodies that are not JSON fare the same. JSON-RPC 2.0 requires an error response carrying the
request's id (or ``null`` when it cannot be read): -32602 invalid params, -32600 invalid request,
-32700 parse error. Malformed notifications have no one to answer: they are logged and dropped.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from pygls.exceptions import JsonRpcException, JsonRpcInvalidParams, JsonRpcInvalidRequest, JsonRpcParseError
from pygls.protocol import LanguageServerProtocol

log = logging.getLogger(__name__)

_MAX_DETAIL = 300


class RequestFailed(JsonRpcException):
    """LSP's RequestFailed (-32803): the request was valid but could not be done now (no index yet, a
    workspace without folders); the message says why. Not an internal error: nothing is broken."""

    CODE = -32803
    MESSAGE = "Request failed"


@dataclass
class Malformed:
    """A message that could not be structured, standing in for it until ``handle_message``."""

    id: int | str | None  # the request's id when it has a usable one; None for notifications and unreadable ids
    is_request: bool
    code: int
    message: str


def _usable_id(data: dict[str, Any]) -> int | str | None:
    value = data.get("id")
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        return None
    return value


def _detail(exc: BaseException) -> str:
    """What was wrong with the params, in cattrs' words (``required field missing @ $.context``)."""
    cause = exc.__cause__ or exc
    try:
        from cattrs import transform_error

        lines = transform_error(cause)  # type: ignore[arg-type]
        text = "; ".join(lines)
    except Exception:  # not a cattrs error: its own message
        text = str(cause)
    return text[:_MAX_DETAIL] or type(cause).__name__


class ProtegeProtocol(LanguageServerProtocol):
    """``LanguageServerProtocol`` that answers malformed requests instead of dropping them."""

    def structure_message(self, data: dict[str, Any]) -> Any:
        try:
            return super().structure_message(data)
        except JsonRpcException as exc:
            method = data.get("method")
            if not isinstance(method, str):
                raise  # a malformed response to one of our own requests: nothing to answer
            is_request = "id" in data
            code = JsonRpcInvalidParams.CODE if isinstance(exc, JsonRpcInvalidParams) else exc.code
            what = "request" if is_request else "notification"
            return Malformed(_usable_id(data), is_request, code,
                             f"Invalid params for {what} {method!r}: {_detail(exc)}")

    def handle_message(self, message: Any) -> None:
        if isinstance(message, Malformed):
            self._answer(message)
            return
        if isinstance(message, dict):  # no "jsonrpc" member: pygls passes the raw object through
            is_request = "method" in message and "id" in message
            self._answer(Malformed(_usable_id(message) if "id" in message else None, is_request or "id" in message,
                                   JsonRpcInvalidRequest.CODE, "Invalid request: not JSON-RPC 2.0 (no 'jsonrpc': '2.0')"))
            return
        if not hasattr(message, "jsonrpc"):  # a batch (LSP has none) or a bare JSON value
            self._answer(Malformed(None, True, JsonRpcInvalidRequest.CODE,
                                   f"Invalid request: expected one JSON object, got {type(message).__name__}"))
            return
        if message.jsonrpc != self.VERSION:
            is_request = hasattr(message, "method") and hasattr(message, "id")
            self._answer(Malformed(getattr(message, "id", None) if is_request else None, is_request,
                                   JsonRpcInvalidRequest.CODE,
                                   f"Invalid request: JSON-RPC version {message.jsonrpc!r}, expected '2.0'"))
            return
        super().handle_message(message)

    def _handle_notification(self, method_name: str, params: Any) -> None:
        # Client bugs that pygls would report as "Error in server: KeyError" popups: a change or close
        # for a document that was never opened, a cancellation naming an id no request can have.
        if method_name == "$/cancelRequest":
            target = getattr(params, "id", None)
            if isinstance(target, bool) or not isinstance(target, (int, str)):
                log.warning("dropped $/cancelRequest with an invalid id %r", target)
                return
        elif method_name in ("textDocument/didChange", "textDocument/didClose"):
            uri = getattr(getattr(params, "text_document", None), "uri", None)
            try:
                known = uri in self.workspace.text_documents
            except RuntimeError:  # not initialized yet
                known = False
            if not known:
                log.warning("dropped %s for a document that is not open: %s", method_name, uri)
                return
        super()._handle_notification(method_name, params)

    def _answer(self, bad: Malformed) -> None:
        if not bad.is_request:
            log.warning("dropped a malformed notification: %s", bad.message)
            return
        log.warning("answered a malformed request (id %r) with error %d: %s", bad.id, bad.code, bad.message)
        # A plain object, not lsprotocol's ResponseErrorMessage: its converter drops a None id, and JSON-RPC
        # wants `"id": null` when the id could not be read.
        self._send_data({"jsonrpc": self.VERSION, "id": bad.id, "error": {"code": bad.code, "message": bad.message}})

    def answer_unparseable(self, error: Exception) -> bool:
        """Answer a body that is not JSON with a parse error (id null); True when ``error`` was that."""
        if not isinstance(error, (json.JSONDecodeError, UnicodeDecodeError)):
            return False
        self._answer(Malformed(None, True, JsonRpcParseError.CODE, f"Parse error: the message is not JSON ({error})"))
        return True

    def cancel_pending_requests(self) -> int:
        """Cancel the handlers of requests still queued (not the current one); return how many.

        pygls 2.1's ``shutdown`` cancels them while iterating ``_request_futures``; a queued thread-pool
        handler's cancel runs its done callback at once, which pops the dict mid-iteration and the
        shutdown request fails with "dictionary changed size during iteration". Cancelling them here
        first, over a copy, leaves pygls' loop nothing to cancel.
        """
        current = getattr(self, "msg_id", None)
        n = 0
        for msg_id, future in list(self._request_futures.items()):
            if msg_id != current and not future.done() and future.cancel():
                n += 1
        return n

