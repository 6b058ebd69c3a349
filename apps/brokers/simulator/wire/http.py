"""Deribit's HTTP transport: ``GET /api/v2/{method}?params`` and ``POST`` with a JSON-RPC body;
errors with status 400. Authorisation by ``access_token``, ``Authorization: Bearer``, ``Basic``
(client id and secret) or Deribit's ``deri-hmac-sha256`` signature header."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
from typing import TYPE_CHECKING, Any

from aiohttp import web

from apps.brokers.simulator.wire.codec import dumps, error_message, loads, now_us
from apps.brokers.simulator.wire.errors import INVALID_REQUEST, RpcError
from apps.brokers.simulator.wire.registry import NO_ANSWER
from apps.brokers.simulator.wire.session import Session

if TYPE_CHECKING:
    from apps.brokers.simulator.deribit_server import DeribitSimServer
    from apps.brokers.simulator.wire.market import SimOptions


async def handle_http(server: DeribitSimServer, request: web.Request) -> web.StreamResponse:
    us_in = now_us()
    testnet = server.options.testnet
    method = f"{request.match_info['scope']}/{request.match_info['name']}"
    session = Session(transport=request.transport)
    from_query = request.method == "GET"
    body_text = ""
    if from_query:
        message: Any = {"jsonrpc": "2.0", "method": method, "params": dict(request.query)}
    else:
        raw = await request.read()
        if len(raw) > server.options.max_frame_bytes:
            error = RpcError(INVALID_REQUEST, "request entity too large")
            return response(error_message(None, error, us_in=us_in, testnet=testnet))
        body_text = raw.decode("utf-8", errors="replace")
        try:
            message = loads(raw) if raw.strip() else {}
        except RpcError as error:
            return response(error_message(None, error, us_in=us_in, testnet=testnet))
        if isinstance(message, dict):
            if "method" not in message and "params" not in message:
                message = {"params": message}
            message = {**message, "method": method}
    token = authorisation(server.options, request, body_text)
    answer = await server.answer(session, message, us_in, from_query=from_query, http_token=token)
    if answer is NO_ANSWER:
        # frozen: hold the request open (the client times out); dropped: already cut
        while server.faults.frozen and not session.closed:
            await asyncio.sleep(0.05)
        session.drop()
        return web.Response(status=204)
    return response(answer)


def response(answer: dict[str, Any]) -> web.Response:
    status = 400 if "error" in answer else 200
    return web.Response(text=dumps(answer), status=status, content_type="application/json")


def authorisation(options: SimOptions, request: web.Request, body: str) -> str | bool | None:
    """An access token (Bearer), True for valid key credentials (Basic or signature), False
    for credentials that were given and are wrong, None when there are none."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    scheme = scheme.lower()
    if scheme == "bearer":
        return value.strip()
    if scheme == "basic":
        try:
            client_id, _, secret = base64.b64decode(value).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        return hmac.compare_digest(client_id, options.client_id) and hmac.compare_digest(
            secret, options.client_secret
        )
    if scheme == "deri-hmac-sha256":
        fields = dict(part.strip().split("=", 1) for part in value.split(",") if "=" in part)
        if fields.get("id") != options.client_id:
            return False
        payload = (
            f"{fields.get('ts', '')}\n{fields.get('nonce', '')}\n{request.method}\n"
            f"{request.path_qs}\n{body}\n"
        )
        expected = hmac.new(
            options.client_secret.encode(), payload.encode(), hashlib.sha256
        ).hexdigest()
        return hmac.compare_digest(expected, fields.get("sig", ""))
    return None
