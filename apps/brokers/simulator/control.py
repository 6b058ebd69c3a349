"""Fault injection for the Deribit simulator: the ``Faults`` switchboard the server consults on
every request, and the ``/_sim/`` HTTP interface that flips it from another process.

What each fault does (the server applies them; tests read this as the contract):

- ``drop_after(n)``: the server sends ``n`` more answers, then cuts the socket that carried the
  last one (``n == 0``: cut every open socket now, same as ``drop_now``).
- ``drop_on_next_order(when, kind)``: the next ``private/buy``/``sell``/``close_position`` whose
  order matches ``kind`` (for a linked request: the primary or any order of its
  ``otoco_config``) cuts its connection without an answer, either ``before`` the engine sees it
  (no order exists) or ``after`` (the order exists; the client never hears of it).
- ``drop_on_next_request(method, when)``: the same for any method, e.g. ``private/cancel``.
- ``reject_next_order(kind, code)``: armed on the engine (``engine.faults``). A standalone
  order of that kind is refused with the Deribit error; a linked secondary (the stop or target
  of an OTOCO) is refused when the primary's fill activates it: it becomes ``rejected`` and its
  OCO partner is cancelled, so the position is left unprotected.
- ``fail_next_request(method, code)``: the next call of ``method`` (e.g. ``private/cancel``)
  is answered with that Deribit error and does nothing (``10028`` too_many_requests, ``10040``
  retry, ``10047`` matching_engine_queue_full...).
- ``delay(ms, methods=None)``: answers (to the given methods, or all) leave ``ms`` later; the
  engine still acts at once, so a client that times out does not know whether an order exists.
- ``silence_heartbeats()``: no heartbeat messages are sent and ``public/test`` is not answered.
- ``freeze()``: nothing is answered and nothing is pushed; sockets stay open (half-open link).
- ``set_maintenance(True)``: every private method answers 11051 ``system_maintenance``.
- price moves (``/_sim/price``) go through the engine, so stops and targets trigger.
- ``reset()``: every fault off (``/_sim/reset {"engine": true}`` also starts a fresh account).

HTTP (JSON bodies; each POST answers the fault table, ``price`` the state):
``GET /_sim/state`` · ``GET /_sim/faults`` · ``POST /_sim/drop {after_answers?}`` ·
``POST /_sim/drop_on_order {when, kind, count?}`` · ``POST /_sim/drop_on_request {method, when,
count?}`` · ``POST /_sim/reject {kind, code, message?, count?}`` · ``POST /_sim/fail {method,
code, message?, count?}`` · ``POST /_sim/delay {ms, methods?}`` · ``POST /_sim/heartbeats
{answer}`` · ``POST /_sim/freeze {on}`` · ``POST /_sim/maintenance {on}`` · ``POST /_sim/price
{instrument, price, gap?}`` · ``POST /_sim/reset {engine?}``. Bad values answer 400.

Order kinds: ``stop`` = stop_market/stop_limit, ``take`` = take_market/take_limit, ``primary`` =
a market/limit order placed by buy/sell, ``secondary`` (rejections only) = a market/limit
secondary of an OTO, ``any`` = every order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from apps.brokers.simulator.wire.codec import dumps, loads
from apps.brokers.simulator.wire.errors import MESSAGES, RpcError

if TYPE_CHECKING:
    from apps.brokers.simulator.deribit_server import DeribitSimServer

ORDER_KINDS = ("any", "primary", "stop", "take")
REJECT_KINDS = ("any", "primary", "stop", "take", "secondary")
ORDER_METHODS = ("private/buy", "private/sell", "private/close_position")
WHEN = ("before", "after")


def order_kind(order_type: str | None) -> str:
    if order_type and order_type.startswith("stop_"):
        return "stop"
    if order_type and order_type.startswith("take_"):
        return "take"
    return "primary"


def request_order_kinds(method: str, params: dict[str, Any]) -> set[str]:
    """Kinds of the orders an order request would create (the primary and any linked ones)."""
    if method == "private/close_position":
        return {"primary"}
    kinds = {order_kind(params.get("type") if isinstance(params.get("type"), str) else None)}
    config = params.get("otoco_config")
    if isinstance(config, list):
        for leg in config:
            if isinstance(leg, dict):
                leg_type = leg.get("type")
                kinds.add(order_kind(leg_type if isinstance(leg_type, str) else "limit"))
    return kinds


@dataclass
class FailRule:
    method: str
    code: int
    message: str
    data: Any = None
    remaining: int = 1


@dataclass
class DropRule:
    when: str
    kind: str | None = None  # order kind, for order requests
    method: str | None = None  # any method
    remaining: int = 1


@dataclass
class Faults:
    maintenance_on: bool = False
    heartbeats_silent: bool = False
    frozen: bool = False
    delay_ms: float = 0.0
    delay_methods: frozenset[str] | None = None
    drop_after_answers: int | None = None
    drops: list[DropRule] = field(default_factory=list)
    failures: list[FailRule] = field(default_factory=list)
    # set by the server: how drop_now reaches the sockets, where rejections are armed
    _drop_all: Any = None
    _engine_faults: Any = None  # () -> engine.faults (EngineFaults)

    # -- switches ---------------------------------------------------------------------------
    @property
    def maintenance(self) -> bool:
        return self.maintenance_on

    def set_maintenance(self, on: bool = True) -> None:
        self.maintenance_on = on

    def silence_heartbeats(self, silent: bool = True) -> None:
        self.heartbeats_silent = silent

    def freeze(self, frozen: bool = True) -> None:
        self.frozen = frozen

    def delay(self, ms: float, methods: list[str] | tuple[str, ...] | None = None) -> None:
        if ms < 0:
            raise ValueError("ms must be >= 0")
        self.delay_ms = float(ms)
        self.delay_methods = frozenset(methods) if methods else None

    def drop_now(self) -> None:
        if self._drop_all is not None:
            self._drop_all()

    def drop_after(self, answers: int) -> None:
        if answers < 0:
            raise ValueError("answers must be >= 0")
        if answers == 0:
            self.drop_now()
            return
        self.drop_after_answers = answers

    def drop_on_next_order(self, when: str = "before", kind: str = "any", count: int = 1) -> None:
        if when not in WHEN or kind not in ORDER_KINDS:
            raise ValueError(f"when must be one of {WHEN}, kind one of {ORDER_KINDS}")
        self.drops.append(DropRule(when=when, kind=kind, remaining=count))

    def drop_on_next_request(self, method: str, when: str = "before", count: int = 1) -> None:
        if when not in WHEN:
            raise ValueError(f"when must be one of {WHEN}")
        self.drops.append(DropRule(when=when, method=method, remaining=count))

    def reject_next_order(
        self,
        kind: str = "any",
        code: int = 10009,
        message: str | None = None,
        data: Any = None,
        count: int = 1,
    ) -> None:
        if kind not in REJECT_KINDS:
            raise ValueError(f"kind must be one of {REJECT_KINDS}")
        if self._engine_faults is None:
            raise RuntimeError("no engine attached")
        self._engine_faults().reject_next(
            kind, int(code), message or MESSAGES.get(int(code)), data, count=count
        )

    def fail_next_request(
        self,
        method: str,
        code: int = 10040,
        message: str | None = None,
        data: Any = None,
        count: int = 1,
    ) -> None:
        if count < 1:
            raise ValueError("count must be at least 1")
        text = message or MESSAGES.get(int(code), "error")
        self.failures.append(FailRule(method, int(code), text, data, count))

    def reset(self) -> None:
        self.maintenance_on = False
        self.heartbeats_silent = False
        self.frozen = False
        self.delay_ms = 0.0
        self.delay_methods = None
        self.drop_after_answers = None
        self.drops.clear()
        self.failures.clear()
        if self._engine_faults is not None:
            self._engine_faults().clear()

    def snapshot(self) -> dict[str, Any]:
        return {
            "maintenance": self.maintenance_on,
            "heartbeats_silent": self.heartbeats_silent,
            "frozen": self.frozen,
            "delay_ms": self.delay_ms,
            "delay_methods": sorted(self.delay_methods) if self.delay_methods else None,
            "drop_after_answers": self.drop_after_answers,
            "drops": [rule.__dict__ for rule in self.drops],
            "failures": [rule.__dict__ for rule in self.failures],
            "rejects": [
                {"kind": r.kind, "code": r.code, "message": r.message, "remaining": r.remaining}
                for r in (self._engine_faults().armed if self._engine_faults else ())
            ],
        }

    # -- consulted by the server -------------------------------------------------------------
    def delay_for(self, method: str) -> float:
        if self.delay_ms and (self.delay_methods is None or method in self.delay_methods):
            return self.delay_ms / 1000.0
        return 0.0

    def take_drop(self, method: str, params: dict[str, Any], when: str) -> bool:
        """Whether this request must cut its connection at ``when``; consumes the rule."""
        for rule in self.drops:
            if rule.when != when:
                continue
            if rule.method is not None:
                hit = rule.method == method
            else:
                hit = method in ORDER_METHODS and (
                    rule.kind == "any" or rule.kind in request_order_kinds(method, params)
                )
            if hit:
                rule.remaining -= 1
                if rule.remaining <= 0:
                    self.drops.remove(rule)
                return True
        return False

    def take_failure(self, method: str) -> RpcError | None:
        """The error armed for this method, if any (consumes it)."""
        for rule in self.failures:
            if rule.method == method:
                rule.remaining -= 1
                if rule.remaining <= 0:
                    self.failures.remove(rule)
                return RpcError(rule.code, rule.message, rule.data)
        return None

    def count_answer(self) -> bool:
        """Count one answer sent; True when it was the last before the planned drop."""
        if self.drop_after_answers is None:
            return False
        self.drop_after_answers -= 1
        if self.drop_after_answers <= 0:
            self.drop_after_answers = None
            return True
        return False


# -- the /_sim/ HTTP interface ---------------------------------------------------------------


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(text=dumps(data), status=status, content_type="application/json")


async def _body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        body = loads(await request.read())
    except RpcError:
        raise web.HTTPBadRequest(text='{"error":"body is not JSON"}') from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text='{"error":"body must be a JSON object"}')
    return body


def add_control_routes(app: web.Application, server: DeribitSimServer) -> None:
    """Mount ``/_sim/*``. Every POST answers the fault table afterwards (or the state)."""
    faults = server.faults

    def guarded(action: Any) -> Any:
        async def view(request: web.Request) -> web.Response:
            body = await _body(request)
            try:
                result = action(body)
            except (ValueError, TypeError, KeyError) as exc:
                return _json({"error": str(exc)}, status=400)
            return _json(result if result is not None else faults.snapshot())

        return view

    async def state(request: web.Request) -> web.Response:
        return _json(server.state())

    async def fault_table(request: web.Request) -> web.Response:
        return _json(faults.snapshot())

    def drop(body: dict[str, Any]) -> None:
        faults.drop_after(int(body.get("after_answers", 0)))

    def drop_on_order(body: dict[str, Any]) -> None:
        faults.drop_on_next_order(
            when=str(body.get("when", "before")),
            kind=str(body.get("kind", "any")),
            count=int(body.get("count", 1)),
        )

    def drop_on_request(body: dict[str, Any]) -> None:
        faults.drop_on_next_request(
            str(body["method"]),
            when=str(body.get("when", "before")),
            count=int(body.get("count", 1)),
        )

    def reject(body: dict[str, Any]) -> None:
        faults.reject_next_order(
            kind=str(body.get("kind", "any")),
            code=int(body.get("code", 10009)),
            message=body.get("message"),
            data=body.get("data"),
            count=int(body.get("count", 1)),
        )

    def fail(body: dict[str, Any]) -> None:
        faults.fail_next_request(
            str(body["method"]),
            code=int(body.get("code", 10040)),
            message=body.get("message"),
            data=body.get("data"),
            count=int(body.get("count", 1)),
        )

    def delay(body: dict[str, Any]) -> None:
        methods = body.get("methods")
        faults.delay(float(body.get("ms", 0)), list(methods) if methods else None)

    def heartbeats(body: dict[str, Any]) -> None:
        faults.silence_heartbeats(not bool(body.get("answer", False)))

    def maintenance(body: dict[str, Any]) -> None:
        faults.set_maintenance(bool(body.get("on", True)))

    def freeze(body: dict[str, Any]) -> None:
        faults.freeze(bool(body.get("on", True)))

    def price(body: dict[str, Any]) -> Any:
        server.set_price(str(body["instrument"]), body["price"], gap=bool(body.get("gap", False)))
        return server.state()

    def reset(body: dict[str, Any]) -> Any:
        faults.reset()
        if body.get("engine"):
            server.reset_engine()
        return faults.snapshot()

    app.router.add_get("/_sim/state", state)
    app.router.add_get("/_sim/faults", fault_table)
    app.router.add_post("/_sim/drop", guarded(drop))
    app.router.add_post("/_sim/drop_on_order", guarded(drop_on_order))
    app.router.add_post("/_sim/drop_on_request", guarded(drop_on_request))
    app.router.add_post("/_sim/reject", guarded(reject))
    app.router.add_post("/_sim/fail", guarded(fail))
    app.router.add_post("/_sim/delay", guarded(delay))
    app.router.add_post("/_sim/heartbeats", guarded(heartbeats))
    app.router.add_post("/_sim/maintenance", guarded(maintenance))
    app.router.add_post("/_sim/freeze", guarded(freeze))
    app.router.add_post("/_sim/price", guarded(price))
    app.router.add_post("/_sim/reset", guarded(reset))
