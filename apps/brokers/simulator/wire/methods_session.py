"""Session methods: auth, heartbeats, test, hello, time, subscriptions, cancel-on-disconnect."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from apps.brokers.simulator.wire import channels
from apps.brokers.simulator.wire.errors import RpcError, invalid_params
from apps.brokers.simulator.wire.registry import NO_ANSWER, Call, rpc

VERSION = "1.2.26"


@rpc("public/auth")
def auth(call: Call) -> dict[str, Any]:
    grant, result = call.server.tokens.authenticate(call.params)
    if call.session.is_websocket:
        call.session.grant = grant
    return result


@rpc("public/test")
def test(call: Call) -> dict[str, Any]:
    call.session.test_request_pending = False
    if call.params.str("expected_result") == "exception":
        raise RpcError(11050, "bad_request")
    return {"version": VERSION}


@rpc("public/hello", websocket_only=True)
def hello(call: Call) -> dict[str, Any]:
    call.params.str("client_name", required=True)
    call.params.str("client_version", required=True)
    return {"version": VERSION}


@rpc("public/get_time")
def get_time(call: Call) -> int:
    return call.server.now_ms()


@rpc("public/status")
def status(call: Call) -> dict[str, Any]:
    locked = "true" if call.server.faults.maintenance else "false"
    return {"locked": locked, "locked_indices": []}


@rpc("public/set_heartbeat", websocket_only=True)
def set_heartbeat(call: Call) -> str:
    interval = call.params.decimal("interval", required=True)
    assert interval is not None
    minimum = call.server.options.min_heartbeat_interval
    if interval < Decimal(str(minimum)):
        raise invalid_params(f"must be at least {minimum:g}", "interval")
    call.server.start_heartbeat(call.session, float(interval))
    return "ok"


@rpc("public/disable_heartbeat", websocket_only=True)
def disable_heartbeat(call: Call) -> str:
    call.server.stop_heartbeat(call.session)
    return "ok"


def _subscribe(call: Call, *, private: bool) -> list[str]:
    requested = call.params.str_list("channels", required=True)
    label = call.params.str("label", max_length=16) if private else None
    authorised = call.server.is_authorised(call.session)
    accepted = []
    for name in requested:
        channel = channels.parse(name, call.server.instrument_names())
        if channel is None:
            continue
        if channel.private and not private:
            continue
        if channel.interval == "raw" and not authorised:
            continue
        call.session.subscriptions[name] = label
        accepted.append(name)
    call.server.after_subscribe(call.session, accepted)
    return accepted


@rpc("public/subscribe", websocket_only=True)
def public_subscribe(call: Call) -> list[str]:
    return _subscribe(call, private=False)


@rpc("private/subscribe", websocket_only=True)
def private_subscribe(call: Call) -> list[str]:
    return _subscribe(call, private=True)


def _unsubscribe(call: Call) -> list[str]:
    removed = []
    for name in call.params.str_list("channels", required=True):
        if call.session.subscriptions.pop(name, _ABSENT) is not _ABSENT:
            removed.append(name)
    return removed


_ABSENT = object()


@rpc("public/unsubscribe", websocket_only=True)
def public_unsubscribe(call: Call) -> list[str]:
    return _unsubscribe(call)


@rpc("private/unsubscribe", websocket_only=True)
def private_unsubscribe(call: Call) -> list[str]:
    return _unsubscribe(call)


@rpc("public/unsubscribe_all", websocket_only=True)
def public_unsubscribe_all(call: Call) -> str:
    call.session.subscriptions.clear()
    return "ok"


@rpc("private/unsubscribe_all", websocket_only=True)
def private_unsubscribe_all(call: Call) -> str:
    call.session.subscriptions.clear()
    return "ok"


def _scope(call: Call) -> str:
    scope = call.params.str("scope", default="connection", choices=("connection", "account"))
    assert scope is not None
    if scope == "connection" and not call.session.is_websocket:
        raise RpcError(10030)
    return scope


@rpc("private/enable_cancel_on_disconnect")
def enable_cancel_on_disconnect(call: Call) -> str:
    if _scope(call) == "account":
        call.server.cancel_on_disconnect_account = True
    call.session.cancel_on_disconnect = True
    return "ok"


@rpc("private/disable_cancel_on_disconnect")
def disable_cancel_on_disconnect(call: Call) -> str:
    if _scope(call) == "account":
        call.server.cancel_on_disconnect_account = False
    call.session.cancel_on_disconnect = False
    return "ok"


@rpc("private/get_cancel_on_disconnect")
def get_cancel_on_disconnect(call: Call) -> dict[str, Any]:
    scope = _scope(call)
    enabled = (
        call.server.cancel_on_disconnect_account
        if scope == "account"
        else call.session.cancel_on_disconnect
    )
    return {"scope": scope, "enabled": enabled}


@rpc("private/logout", websocket_only=True)
def logout(call: Call) -> Any:
    call.session.logged_out = True
    if call.params.bool("invalidate_token", default=True) and call.session.grant is not None:
        call.server.tokens.revoke(call.session.grant)
    call.server.close_gracefully(call.session)
    return NO_ANSWER
