"""The strategy loop: one process, one lock, one run.

``run_loop_forever(run_id)`` takes the runner lock (a fresh fencing number), claims the run row
with that fence, connects the broker and RECONCILES before anything else (unknown outcomes
resolved by label, trades that closed while down recorded, a position without a stop
re-protected, orphans cancelled). Then, on each closed candle in ANALYZING: analyze → size with
the risk settings as they are at the close (control.py) → protections → the bracket service →
POSITION_OPEN. While a position is open it follows the bracket; when the stop or target fills
it records the trade from the broker's fills and goes back to ANALYZING.

Each pass renews the lock (compare-and-extend), stamps the heartbeat and pings the watchdog; the
lock is checked again right before every order. Faults: a lost connection pauses the run
(reason ``disconnected``) and marks the account disconnected; orphans pause it
(``ORPHANS_DETECTED``); a tripped protection pauses it with its code; anything else moves it
to ERROR with the message, the context and the last log lines. The loop then stops: only the
trader resumes (PAUSED) or restarts (ERROR).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import gc
import logging
import signal as signals
import sys
import threading
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from django.db import close_old_connections, connection
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from redis.exceptions import RedisError

from apps.brokers.base import (
    LABEL_PREFIX,
    BrokerError,
    Candle,
    ConnectionLost,
    ConnectionState,
    EventKind,
    OrderOutcomeUnknown,
    OrderState,
    Side,
    bracket_labels,
)
from apps.brokers.base import Order as BrokerOrder
from apps.monitoring import chart, metrics
from apps.monitoring.events import event_record
from apps.monitoring.live import live_push, pushes_in_background
from apps.monitoring.logging import log_context
from apps.orders.armed import ArmedIntent, bracket_arm, bracket_disarm
from apps.orders.brackets import (
    BracketPlan,
    BracketUnknown,
    IntentCondition,
    IntentRefused,
    OrphansDetected,
    bracket_place,
    instrument_spec,
)
from apps.orders.gateway import BrokerGateway, StreamItem
from apps.orders.manual import drain_commands, manual_commands_waiting
from apps.orders.models import Bracket, BracketState, Trade
from apps.orders.orphans import orphan_sweep_once
from apps.orders.reconcile import reconcile
from apps.orders.services import (
    bracket_leg_rows,
    bracket_protect,
    bracket_read,
    bracket_rows_write,
    trade_compute,
)
from apps.risk.services import sizing_log
from apps.risk.sizing import SizingRefused
from apps.strategies.control import control_version
from apps.strategies.models import LOOP_STATES, RunState, StrategyRun
from apps.strategies.runner.config import runner_setting
from apps.strategies.runner.entry import (
    MAX_AGE_S,
    EntryContext,
    Standing,
    account_reads,
    close_read,
    entry_context_gather,
    standing_read,
)
from apps.strategies.runner.lock import ControlChanged, FireAhead, LockLost, RunnerLock
from apps.strategies.runner.supervisor import LAUNCH_KEY
from apps.strategies.services import (
    Step,
    run_announce,
    run_heartbeat,
    run_path,
    run_path_check,
    run_path_written,
    run_transition,
)
from tradebaas.redis import redis_client, rkey

log = logging.getLogger("tradebaas.runner")

GatewayFactory = Callable[[StrategyRun], BrokerGateway]
SWEEP_REQUEST_KEY = "state:orphan-sweep-request"
CHECKPOINTS_KEY = "state:run-checkpoints"
LOOP_KEY = "state:runner-loop"
ORPHAN_SWEEP_SECONDS = 60.0
BURST_LIMIT = 50  # events handled in one pass before the position is followed
OFFLINE_LIMIT_SECONDS = 120.0  # auto-reconnect that takes longer than this pauses the run
SWITCH_INTERVAL_S = 0.0005
OUR_ORDERS = ("open_orders", (None, LABEL_PREFIX))  # our open orders (labelled), any instrument
ARM_RETRY_S = 5.0  # after arming failed (Redis or the database hiccuped)
PREPARE_REFRESH_S = MAX_AGE_S * 0.8  # a waiting loop gathers its entry context again this often


class LoopExit(Exception):
    """Leave the loop quietly (the run was stopped/paused, or the process is shutting down)."""

    def __init__(self, outcome: str) -> None:
        super().__init__(outcome)
        self.outcome = outcome


class ProtectionTripped(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class SignalRefused(Exception):
    """A signal not traded: its prices collapse on the tick (the backtest refuses it the same
    way), or as many brackets as ``max_open_trades`` allows are open already."""

    def __init__(self, message: str, code: str = "SIGNAL_REFUSED") -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class _LogTail(logging.Handler):
    """The last lines the loop logged, for the error context the page shows."""

    def __init__(self, size: int = 40) -> None:
        super().__init__(level=logging.INFO)
        self.lines: collections.deque[str] = collections.deque(maxlen=size)
        self.thread = threading.get_ident()
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self.thread:
            with contextlib.suppress(Exception):  # a log line must never break the loop
                self.lines.append(self.format(record))


def default_gateway(run: StrategyRun) -> BrokerGateway:
    from apps.brokers.models import BrokerAccount
    from apps.brokers.services import broker_build

    account = None
    if run.broker_account_id is not None:
        account = BrokerAccount.objects.get(pk=run.broker_account_id)
    return BrokerGateway(broker_build(account=account))


_stop_requested = threading.Event()
_last_heartbeat: list[float] = []  # wall-clock time of this process's last loop heartbeat


def _heartbeat_age() -> float:
    """Seconds since this process's loop last stamped its heartbeat (NaN: it never did)."""
    return time.time() - _last_heartbeat[-1] if _last_heartbeat else float("nan")


def _stamp_heartbeat() -> None:
    _last_heartbeat[:] = [time.time()]
    metrics.HEARTBEAT_AGE.set(0)


def _show_state(state: RunState) -> None:
    """LOOP_STATE: 1 for the state the run is in, 0 for the others. Each transition sets it
    (run_transition, in the process that makes it); the loop sets it once at start, when it
    resumes a run already in a loop state (no transition there)."""
    for each in RunState:
        metrics.LOOP_STATE.labels(state=each.value).set(1 if each is state else 0)


def _on_sigterm(signum, frame) -> None:  # pragma: no cover - exercised by real workers
    _stop_requested.set()


def run_loop_forever(
    run_id: int,
    *,
    gateway_factory: GatewayFactory | None = None,
    stop: threading.Event | None = None,
    max_seconds: float | None = None,
) -> str:
    """Host the loop of ``run_id``; returns why it ended (busy, paused, error, stopped, ...)."""
    _fresh_connection()
    # scraped in this process: the age computed at scrape time, so a hung loop shows a growing
    # age; under prometheus multiprocess mode the value set on each pass is what is exported
    metrics.HEARTBEAT_AGE.set_function(_heartbeat_age)
    _tune_process()
    pushes_in_background()  # the page's fragments never hold the loop up
    try:
        return _run_locked(run_id, gateway_factory, stop, max_seconds)
    finally:
        pushes_in_background(False)


def _run_locked(
    run_id: int,
    gateway_factory: GatewayFactory | None,
    stop: threading.Event | None,
    max_seconds: float | None,
) -> str:
    lock = RunnerLock(run_id)
    if not lock.acquire():
        log.info("run %s: another loop holds the runner lock", run_id)
        return "busy"
    try:
        redis_client().delete(rkey(LAUNCH_KEY))
        claimed = StrategyRun.objects.filter(
            id=run_id, is_active=True, state__in=LOOP_STATES
        ).update(fence=lock.fence, heartbeat_at=timezone.now())
        if not claimed:
            return "not-runnable"
        run = StrategyRun.objects.get(id=run_id)
        _announce_loop(run_id, lock.fence)
        if threading.current_thread() is threading.main_thread():
            signals.signal(signals.SIGTERM, _on_sigterm)
        with log_context(run_id=run_id):
            loop = Loop(
                run,
                lock,
                gateway_factory=gateway_factory or default_gateway,
                stop=stop or _stop_requested,
                max_seconds=max_seconds,
            )
            return loop.run()
    finally:
        lock.release()  # LOCK_HELD follows the lock (lock.py)
        _fresh_connection()


@contextlib.contextmanager
def _no_collection():
    """No cyclic garbage collection between a candle close and the exchange's answer: a full
    collection in a Django process takes milliseconds. It runs after the answer instead."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _tune_process() -> None:
    """For the loop's reaction time. The objects alive now (modules, settings, the app) are
    moved out of the collector's sight (``gc.freeze``), so later collections only walk what
    the loop allocates. A thread that wants the interpreter (the broker's I/O thread, with the
    exchange's answer) gets it within ``SWITCH_INTERVAL_S`` instead of Python's 5 ms. Once per
    process: the worker hosts one loop after another."""
    if sys.getswitchinterval() == SWITCH_INTERVAL_S:
        return
    gc.collect()
    gc.freeze()
    sys.setswitchinterval(SWITCH_INTERVAL_S)


def _announce_loop(run_id: int, fence: int) -> None:
    """Who runs the loop now (pid, host): for the page, the operator and the kill tests."""
    import json
    import os
    import socket

    with contextlib.suppress(Exception):
        redis_client().set(
            rkey(LOOP_KEY),
            json.dumps(
                {"run_id": run_id, "fence": fence, "pid": os.getpid(), "host": socket.gethostname()}
            ),
            ex=3600,
        )


def _fresh_connection() -> None:
    if not connection.in_atomic_block:  # a test's transaction is not ours to close
        close_old_connections()


class Loop:
    def __init__(
        self,
        run: StrategyRun,
        lock: RunnerLock,
        *,
        gateway_factory: GatewayFactory,
        stop: threading.Event,
        max_seconds: float | None = None,
    ) -> None:
        self.run_row = run
        self.run_id = run.id
        self.lock = lock
        self.fence = lock.fence
        self.factory = gateway_factory
        self.stop = stop
        self.deadline = time.monotonic() + max_seconds if max_seconds else None
        self.gateway: BrokerGateway | None = None
        self.state = RunState(run.state)
        self.bracket: Bracket | None = None
        self.window: collections.deque[Candle] = collections.deque(maxlen=10)
        self.peak_equity = Decimal("0")
        self.policy = str(runner_setting("RUNNER_UNPROTECTED_POLICY"))
        self.wait = float(runner_setting("RUNNER_CANDLE_WAIT_S"))
        self.poll = float(runner_setting("RUNNER_POSITION_POLL_S"))
        self.next_position_check = 0.0
        self.close_hinted = False  # an event said the open bracket may have closed
        self.next_sweep = time.monotonic() + ORPHAN_SWEEP_SECONDS
        self.next_heartbeat = 0.0
        self.trade_misses = 0
        self.offline = False  # disconnected, waiting for the broker's own auto-reconnect
        self.offline_since = 0.0
        self.tail = _LogTail()
        self.ready: EntryContext | None = None  # the next decision's context (entry.py)
        self.standing: Standing | None = None  # its settings, read while a position is open
        self.legs: tuple[int, list[Any]] | None = None  # (bracket pk, its placed order rows)
        self.armed: ArmedIntent | None = None  # the next bracket's intent, written ahead
        self.next_arm = 0.0
        # the events of a trade that closed on this candle, sent once the next entry is out
        self.after_close: list[Callable[[], None]] = []
        _show_state(self.state)

    # --- the whole life -----------------------------------------------------------------------

    def run(self) -> str:
        logging.getLogger().addHandler(self.tail)
        try:
            return self._run()
        finally:
            self._send_after_close()
            logging.getLogger().removeHandler(self.tail)
            self._disarm()
            if self.gateway is not None:
                self.gateway.close()

    def _run(self) -> str:
        from apps.strategies.registry import get_strategy

        try:
            self.strategy = get_strategy(self.run_row.strategy, self.run_row.params)
            self.window = collections.deque(maxlen=max(self.strategy.history, 1) + 5)
            self.gateway = self.factory(self.run_row)
            self.gateway.connect()
            self._reconcile()
            self._warm_up()
            self.gateway.start_streams(self.run_row.instrument, self.strategy.timeframe)
            while True:
                try:
                    self._pass()
                except (LoopExit, LockLost, OrphansDetected, ProtectionTripped):
                    raise
                except Exception as exc:
                    if not (self._lost_connection(exc) and self._comes_back()):
                        raise
                    self._go_offline(f"{type(exc).__name__}: {exc}")
        except LoopExit as exc:
            return exc.outcome
        except LockLost as exc:
            log.warning("run %s: %s; this loop stops trading now", self.run_id, exc)
            event_record(
                kind="lock_lost",
                message=f"Run {self.run_id}: the loop lost its lock and stopped trading",
                level="warning",
                run_id=self.run_id,
            )
            return "lock-lost"
        except OrphansDetected as exc:
            self._pause("ORPHANS_DETECTED", exc.message, exc.context())
            return "paused"
        except ProtectionTripped as exc:
            self._pause(exc.code, exc.message, {})
            return "paused"
        except Exception as exc:
            if self._is_disconnect(exc):
                self._disconnected(exc)
                return "paused"
            self._error(exc)
            return "error"

    def _comes_back(self) -> bool:
        """The trader turned auto-reconnect on and the broker is (or was just) reconnecting."""
        broker = self.gateway.broker
        if not getattr(broker, "auto_reconnect", False):
            return False
        client = getattr(broker, "client", None)
        return bool(getattr(client, "reconnecting", False)) or broker.state in (
            ConnectionState.CONNECTED,
            ConnectionState.CONNECTING,
        )

    def _lost_connection(self, exc: BaseException) -> bool:
        """A failure that a dropped socket explains (its outcome is settled by the reconcile)."""
        return isinstance(
            exc, ConnectionLost | OrderOutcomeUnknown | BracketUnknown | TimeoutError
        ) or self._is_disconnect(exc)

    def _go_offline(self, reason: str) -> None:
        if not self.offline:
            self.offline = True
            self.offline_since = time.monotonic()
            event_record(
                kind="broker_disconnect",
                message=f"Broker connection lost ({reason}); auto-reconnect is on: no order "
                "until it is back and reconciled",
                level="warning",
                run_id=self.run_id,
                alert=True,
            )

    def _is_disconnect(self, exc: BaseException) -> bool:
        if isinstance(exc, ConnectionLost):
            return True
        if isinstance(exc, BracketUnknown | BrokerError | TimeoutError):
            broker = self.gateway.broker if self.gateway else None
            return broker is not None and broker.state is not ConnectionState.CONNECTED
        return False

    # --- one pass ------------------------------------------------------------------------------

    def _pass(self) -> None:
        self._keepalive()
        if self.offline and time.monotonic() - self.offline_since > OFFLINE_LIMIT_SECONDS:
            raise ConnectionLost(f"the broker did not come back within {OFFLINE_LIMIT_SECONDS:g} s")
        item = self.gateway.next_item(self.wait)
        if item is not None:
            self._handle(item)
            # a fill comes as a burst of events (order, fill, position): take what is already
            # queued up to the next candle before following the position, so one bracket
            # check serves the whole burst and a candle behind it does not wait for several
            for _ in range(BURST_LIMIT):
                if item.kind != "event" or self.offline:
                    break
                item = self.gateway.next_queued()
                if item is None:
                    break
                self._handle(item)
        now = time.monotonic()
        if self.bracket is not None and now >= self.next_position_check and not self.offline:
            self._follow_position()
        if not self.offline and manual_commands_waiting():
            self.ready = None
            self.lock.check()  # a manual close sends orders: only the lock holder may
            drain_commands(self.gateway.call, settle=self._settle_manual_close)
        if not self.offline and (now >= self.next_sweep or self._sweep_requested()):
            self.ready = None
            self.next_sweep = now + ORPHAN_SWEEP_SECONDS
            self.lock.check()
            orphan_sweep_once(self.gateway, run_id=self.run_id)
        if self.offline or self.bracket is not None or self.state is not RunState.ANALYZING:
            self.ready = None
        elif not self.gateway.has_waiting():  # nothing to handle first: gather for the close
            self._prepare()
        if self.bracket is None or self.offline:
            self.standing = None
        elif not self.gateway.has_waiting():  # in a position: the next context's settings
            standing = self.standing
            if standing is None or time.monotonic() - standing.read_at > PREPARE_REFRESH_S:
                self.standing = standing_read()
        if (
            self.armed is None
            and not self.offline
            and now >= self.next_arm
            and not self.gateway.has_waiting()
        ):
            self._arm()
        if self.after_close and not self.gateway.has_waiting():
            self._send_after_close()  # a closed trade's events, with no candle waiting

    def _arm(self) -> None:
        """Keep the next bracket's intent written (apps/orders/armed.py), also while a position
        is open: the candle that closes it may be the next entry's."""
        if not self.gateway.supports_linked_orders or self.state not in (
            RunState.ANALYZING,
            RunState.POSITION_OPEN,
        ):
            return
        try:
            self.armed = bracket_arm(
                broker=self.gateway.broker_id,
                instrument=self.run_row.instrument,
                run_id=self.run_id,
                account_id=self.run_row.broker_account_id,
            )
        except Exception:  # the next entry writes its intent at the close instead
            log.warning("run %s: no intent armed", self.run_id, exc_info=True)
            self.next_arm = time.monotonic() + ARM_RETRY_S

    def _disarm(self) -> None:
        armed, self.armed = self.armed, None
        if armed is not None:
            try:
                bracket_disarm(armed)
            except Exception:  # the next loop's reconcile deletes it
                log.warning("run %s: armed intent %s left", self.run_id, armed.bracket_id)

    def _settle_manual_close(self) -> None:
        """After a manual close: record the trade now, before the run stops."""
        if self.bracket is not None:
            self._follow_position()

    def _keepalive(self) -> None:
        if _last_heartbeat:
            metrics.HEARTBEAT_AGE.set(_heartbeat_age())
        if self.stop.is_set():
            raise LoopExit("shutdown")
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise LoopExit("time-limit")
        if self.lock.renew_due():
            self.lock.renew()
        now = time.monotonic()
        if now >= self.next_heartbeat:
            self.next_heartbeat = now + 1.0
            if not run_heartbeat(run_id=self.run_id, fence=self.fence):
                raise LoopExit("stopped")
            row = StrategyRun.objects.filter(id=self.run_id).values("state", "is_active").first()
            if row is None or not row["is_active"] or row["state"] not in LOOP_STATES:
                raise LoopExit("stopped" if not row or not row["is_active"] else "paused")
            _stamp_heartbeat()
            try:
                from apps.monitoring.watchdog import watchdog_ping

                watchdog_ping()
            except ImportError:  # pragma: no cover
                pass

    def _sweep_requested(self) -> bool:
        try:
            return bool(redis_client().delete(rkey(SWEEP_REQUEST_KEY)))
        except Exception:
            return False

    def _handle(self, item: StreamItem) -> None:
        if item.kind == "stream_end":
            payload = item.payload
            raise payload if isinstance(payload, Exception) else ConnectionLost(str(payload))
        if item.kind == "event":
            self.ready = None  # the account changed (or the link did): read it again
            kind = getattr(item.payload, "kind", None)
            if kind is EventKind.DISCONNECTED:
                if not self._comes_back():
                    raise ConnectionLost(f"broker disconnected: {item.payload.payload}")
                self._go_offline(str(item.payload.payload))
            elif kind is EventKind.RECONNECTED:
                self._reconcile()  # what filled or closed while we were away, first
                self.offline = False
                event_record(
                    kind="broker_reconnected",
                    message=f"Broker reconnected (attempt {item.payload.payload}); reconciled",
                    run_id=self.run_id,
                )
            elif (
                kind in (EventKind.FILL, EventKind.ORDER)
                and self.bracket is not None
                and _may_close(self.bracket, item.payload.payload)
            ):
                self.next_position_check = 0.0
                self.close_hinted = True
            return
        candle: Candle = item.payload
        if self.window and candle.open_time_ms <= self.window[-1].open_time_ms:
            return
        self.window.append(candle)
        try:
            if self.offline:
                return
            if self.bracket is not None:
                self._follow_position(together=True)  # the next decision may follow at once
            # a bracket that closed during this candle: its close is the next decision (as in
            # the backtest, which analyses the close of the candle in which the trade closed)
            if self.bracket is None and self.state is RunState.ANALYZING:
                with _no_collection():
                    self._analyze(item.received)
        finally:  # after the decision: its events and the chart never delay a bracket
            self._send_after_close()
            chart.record_candles(self.run_row.instrument, [candle])

    def _send_after_close(self) -> None:
        """The events of a closed trade (its rows are written): the run's moves, the trade."""
        while self.after_close:
            send = self.after_close.pop(0)
            try:
                send()
            except Exception:  # an event lost must not stop the loop; the rows are written
                log.exception("run %s: an event of the closed trade was not sent", self.run_id)

    # --- transitions ---------------------------------------------------------------------------

    def _move(
        self,
        to: RunState,
        reason: str,
        message: str = "",
        pending: list[dict[str, Any]] | None = None,
        **context: Any,
    ) -> None:
        if self.state is to:
            return
        if not run_transition(
            run_id=self.run_id,
            to=to,
            reason=reason,
            message=message,
            context=context,
            fence=self.fence,
            expected=(self.state,),
            pending=pending,
        ):
            raise LoopExit(self._why_refused())
        self.state = to

    def _why_refused(self) -> str:
        row = StrategyRun.objects.filter(id=self.run_id).values("state", "is_active").first()
        if row is None or not row["is_active"]:
            return "stopped"
        return "paused" if row["state"] == RunState.PAUSED else "state-changed"

    def _pause(self, reason: str, message: str, context: dict[str, Any]) -> None:
        run_transition(
            run_id=self.run_id,
            to=RunState.PAUSED,
            reason=reason,
            message=message,
            context=context,
            expected=LOOP_STATES,
        )

    def _disconnected(self, exc: BaseException) -> None:
        reason = f"{type(exc).__name__}: {exc}"
        log.warning("run %s: broker connection lost: %s", self.run_id, reason)
        if self.run_row.broker_account_id is not None:
            from apps.brokers.models import BrokerAccount
            from apps.brokers.services import broker_account_mark_disconnected

            account = BrokerAccount.objects.filter(pk=self.run_row.broker_account_id).first()
            if account is not None:
                broker_account_mark_disconnected(account=account, reason=reason)
        self._pause("disconnected", reason, {"bracket": self._bracket_id()})

    def _error(self, exc: BaseException) -> None:
        log.error("run %s: %s", self.run_id, exc, exc_info=True)
        context = {
            "exception": type(exc).__name__,
            "state": str(self.state),
            "bracket": self._bracket_id(),
            "traceback": traceback.format_exception(exc)[-6:],
            "log": list(self.tail.lines),
        }
        if hasattr(exc, "context") and callable(exc.context):
            context.update(exc.context())
        run_transition(
            run_id=self.run_id,
            to=RunState.ERROR,
            reason="exception",
            message=f"{type(exc).__name__}: {exc}",
            context=context,
            expected=(*LOOP_STATES, RunState.PAUSED),
        )

    def _bracket_id(self) -> str | None:
        return self.bracket.bracket_id if self.bracket is not None else None

    # --- start ---------------------------------------------------------------------------------

    def _reconcile(self) -> None:
        self.ready = None
        self.legs = None
        self._disarm()  # the reconcile settles every armed intent; ours was never sent
        params = self.run_row.params or {}
        report = reconcile(
            self.gateway,
            instrument=self.run_row.instrument,
            run_id=self.run_id,
            account_id=self.run_row.broker_account_id,
            policy=self.policy,
            stop_pct=Decimal(str(params.get("stop_loss_pct", 1))),
            keepalive=self.lock.renew,
        )
        self.bracket = report.open_bracket
        target = RunState.POSITION_OPEN if self.bracket is not None else RunState.ANALYZING
        self._move_any(target, report.as_dict())

    def _move_any(self, to: RunState, report: dict[str, Any]) -> None:
        if self.state is to:
            return
        if not run_transition(
            run_id=self.run_id,
            to=to,
            reason="reconciled",
            context=report,
            fence=self.fence,
            expected=LOOP_STATES,
        ):
            raise LoopExit(self._why_refused())
        self.state = to

    def _warm_up(self) -> None:
        tf_ms = self.strategy.timeframe * 60_000
        need = self.window.maxlen or 1
        now_ms = int(time.time() * 1000)
        try:
            history = self.gateway.call(
                "candles",
                self.run_row.instrument,
                self.strategy.timeframe,
                now_ms - (need + 2) * tf_ms,
                now_ms,
            )
        except (BrokerError, TimeoutError, NotImplementedError) as exc:
            log.warning("run %s: no candle history (%s); warming up live", self.run_id, exc)
            return
        closed = [candle for candle in history if candle.open_time_ms + tf_ms <= now_ms]
        self.window.extend(closed)
        chart.record_candles(self.run_row.instrument, closed, push=False)

    # --- analysing and entering ----------------------------------------------------------------

    def _analyze(self, received: float) -> None:
        ahead = self._fire_ahead()
        try:
            self._decide(received, ahead)
        finally:
            if ahead is not None:
                ahead.settle()  # not used for a request: the intent is armed again

    def _fire_ahead(self) -> FireAhead | None:
        """The armed intent's fire, sent before the analysis when this close will use the
        context gathered while waiting (``_entry_context``): its round trip overlaps the
        analysis and the sizing. None otherwise (the usual fire then comes at the request)."""
        ctx, armed = self.ready, self.armed
        if (
            armed is None
            or ctx is None
            or ctx.control is None
            or not ctx.young()
            or not self.gateway.supports_linked_orders
        ):
            return None
        try:
            return self.lock.fire_ahead(armed.key, int(time.time() * 1000), control=ctx.control)
        except RedisError:  # not sent: the usual fire, at the request, says what Redis says
            log.warning("fire ahead not sent", exc_info=True)
            return None

    def _decide(self, received: float, ahead: FireAhead | None) -> None:
        signal = self.strategy.analyze(list(self.window))
        if signal is None:
            self._push_checkpoints(None)
            return
        # Hot path (entry.py): with an intent armed ahead (armed.py) and the context gathered
        # while waiting, NO database read: the sizing, then ONE Redis round trip (the lock
        # check that fires the intent, refused if a run or the risk settings changed since the
        # context's reads, control.py; sent ahead as the candle arrived, see _fire_ahead)
        # and ONE request. Otherwise, or after such a change, ONE
        # query first (the run's row, to stop if it was stopped, paused or taken over, and the
        # risk settings, fresh); without an armed intent, ONE statement writes the intent with
        # the run's fenced moves before the request. The plan's rows, the run's moves, their
        # events and the sizing's log lines are written once the exchange has answered.
        pending: list[dict[str, Any]] = []
        try:
            try:
                ctx = self._entry_context()
                plan, sized = self._enter(signal, ctx, pending, first=True, ahead=ahead)
            except ControlChanged:  # nothing fired or written: decide again on a fresh read
                if ahead is not None:
                    ahead.settle()  # fired before the change was seen: armed again
                ctx = self._entry_context(read=True)
                plan, sized = self._enter(signal, ctx, pending, first=False)
        finally:
            self._send_after_close()
            run_announce(pending)
        if plan is None:
            return
        acked = getattr(self.bracket, "acked_at", None) or time.perf_counter()
        metrics.CANDLE_TO_BRACKET.observe(acked - received)
        sizing_log(plan.instrument, plan.side, sized)
        self._move(RunState.POSITION_OPEN, "bracket_open", bracket=plan.bracket_id)
        self.next_position_check = time.monotonic() + self.poll
        self._push_checkpoints(signal)

    def _enter(
        self,
        signal: Any,
        ctx: EntryContext,
        pending: list[dict[str, Any]],
        *,
        first: bool,
        ahead: FireAhead | None = None,
    ) -> tuple[BracketPlan | None, Any]:
        """Size ``signal`` on ``ctx`` and place its bracket; (None, None) when refused.

        ``first``: ControlChanged is raised, with nothing written or sent, if a run or the risk
        settings changed since ``ctx`` was read (checked by the fire, or before a refusal); the
        second attempt comes right after reading them again. ``ahead``: the intent's fire, sent
        as the candle arrived (``_fire_ahead``), used if it was made for this intent under
        ``ctx``'s control version."""
        armed = self.armed if self.gateway.supports_linked_orders else None
        control = ctx.control if first else None
        try:
            plan, sized = self._plan(signal, ctx, armed)
        except (ProtectionTripped, SizingRefused, SignalRefused) as exc:
            if control is not None and control_version() != control:
                raise ControlChanged("refused on reads made before a change") from exc
            self._refused(signal, exc, pending)
            return None, None
        steps = [
            Step(RunState.SIGNAL_DETECTED, "signal", signal.reason, _signal_context(signal)),
            Step(RunState.ENTERING_POSITION, "placing", "", {"bracket": plan.bracket_id}),
        ]
        run_path_check(self.state, steps)  # before anything is sent
        # the path's rows are made when first needed: with an armed intent, after the answer
        condition = IntentCondition(
            functools.partial(
                run_path, run_id=self.run_id, start=self.state, steps=steps, fence=self.fence
            )
        )
        if ahead is not None and not (armed is not None and ahead.serves(armed.key, control)):
            ahead.settle()  # not this decision's: the intent armed again before its own fire
            ahead = None

        def fire(key: str, at_ms: int) -> bool:
            if ahead is not None:
                return ahead.take()
            return self.lock.fire(key, at_ms, control=control)

        self.armed = None  # an intent serves one bracket
        try:
            self.bracket = bracket_place(
                gateway=self.gateway,
                plan=plan,
                guard=self.lock.check,
                check=ctx.check,
                condition=condition,
                armed=armed,
                fire=fire,
                fired_ms=ahead.at_ms if ahead is not None else None,
            )
        except IntentRefused:  # stopped, paused or taken over: nothing written or sent
            raise LoopExit(self._why_refused()) from None
        except ControlChanged:
            self.armed = armed  # not fired: still armed
            raise
        except BaseException:
            sizing_log(plan.instrument, plan.side, sized)  # in the error's log lines
            if condition.held is None:  # nothing written: an armed intent stays armed
                self.armed = armed
            self.bracket = (
                Bracket.objects.filter(bracket_id=plan.bracket_id)
                .exclude(state=BracketState.ARMED)
                .first()
            )
            if condition.held:  # the run's moves were written with the bracket
                self._entered(condition.made, pending)
            raise
        if not condition.held:
            self._placed_while_stopping(plan)
        self._entered(condition.made, pending)
        return plan, sized

    def _placed_while_stopping(self, plan: BracketPlan) -> None:
        """The run was stopped, paused or taken over while its bracket's request was out (its
        intent was armed ahead): the bracket is on the exchange, complete and recorded; the run
        is not this loop's any more. The next loop's reconcile adopts the position."""
        why = self._why_refused()
        event_record(
            kind="bracket_opened_while_stopping",
            message=f"Bracket {plan.bracket_id} was placed while the run was being {why}: "
            "it is complete (stop and target on the exchange) and the next start adopts it",
            level="warning",
            context={"bracket": plan.bracket_id},
            run_id=self.run_id,
            alert=True,
        )
        raise LoopExit(why)

    def _entered(self, path: Any, pending: list[dict[str, Any]]) -> None:
        """The run's moves were written with the intent."""
        self.state = path.final
        run_path_written(path)
        pending.extend(path.announcements)

    def _refused(self, signal: Any, exc: Exception, pending: list[dict[str, Any]]) -> None:
        """A signal not traded: recorded as SIGNAL_DETECTED, then back to ANALYZING (sizing or
        signal refused) or on to PAUSED (a protection tripped, raised for ``_run``)."""
        self._send_after_close()  # a trade that closed on this candle comes first in history
        self._move(
            RunState.SIGNAL_DETECTED, "signal", signal.reason, pending, **_signal_context(signal)
        )
        if isinstance(exc, ProtectionTripped):
            event_record(
                kind="protection_tripped",
                message=f"Protection tripped: {exc.message}",
                level="warning",
                context={"code": exc.code},
                run_id=self.run_id,
                alert=True,
            )
            raise exc
        run_announce(pending)
        event_record(
            kind="trade_refused",
            message=f"Signal not traded: {exc}",
            level="warning",
            context={"code": str(getattr(exc, "code", "")), "signal": signal.as_dict()},
            run_id=self.run_id,
        )
        why = "sizing_refused" if isinstance(exc, SizingRefused) else "signal_refused"
        self._move(RunState.ANALYZING, why, str(exc))

    def _entry_context(self, *, read: bool = False) -> EntryContext:
        """The context of this close: the one gathered while waiting, as it is when an intent
        is armed (its fire checks that no run or risk settings change came since the context's
        reads); else, or with ``read``, the run's row and the risk settings are read now (ONE
        query: a run stopped, paused or taken over sends nothing) and the gathered context is
        used only if it was built from the settings row as it is now."""
        ctx, self.ready = self.ready, None  # a trade changes the account: never reused
        if (
            not read
            and ctx is not None
            and ctx.control is not None
            and ctx.young()
            and self.armed is not None
            and self.gateway.supports_linked_orders
        ):
            return ctx
        control = control_version()  # before the rows it covers (control.py)
        run, row = close_read(self.run_id)  # the settings, read fresh for every trade
        if run != (str(self.state), True, self.fence):
            raise LoopExit(self._why_refused())
        if ctx is None or not ctx.current(row):
            return self._gather(row, control=control)
        return dataclasses.replace(ctx, control=control)

    def _gather(
        self,
        *settings_row: tuple | None,
        control: int | None = None,
        account: tuple[Any, list, list] | None = None,
        standing: Standing | None = None,
    ) -> EntryContext:
        """Everything read now; ``settings_row``: the settings row just read, if it was (and
        ``control``, the control version read before it); ``account``: the account's reads
        just made (``account_reads``); ``standing``: the control version and the settings read
        earlier (``standing_read``)."""
        return entry_context_gather(
            self.gateway,
            instrument=self.run_row.instrument,
            account_id=self.run_row.broker_account_id,
            control=control,
            account=account,
            standing=standing,
            **({"settings_row": settings_row[0]} if settings_row else {}),
        )

    def _prepare(self) -> None:
        """Flat and waiting for a candle: keep the next decision's context gathered."""
        ready = self.ready
        if ready is None or time.monotonic() - ready.built_at > PREPARE_REFRESH_S:
            self.ready = None
            self.ready = self._gather()

    def _plan(
        self, signal: Any, ctx: EntryContext, armed: ArmedIntent | None = None
    ) -> tuple[BracketPlan, Any]:
        from apps.risk.selectors import protection_limits
        from apps.risk.services import risk_size_trade

        limits = protection_limits(ctx.settings)
        self._check_open_trades(limits, ctx.open_brackets)
        spec = ctx.spec
        side = signal.side
        # the one rounding rule, shared with the backtest
        entry, stop, target = signal.prices_on_tick(spec.tick_size)
        if stop == entry or target == entry:
            raise SignalRefused("stop or target on the entry after tick rounding")
        self._check_protections(ctx, limits)
        sized = risk_size_trade(
            spec=spec,
            side=side,
            entry=entry,
            stop=stop,
            equity=ctx.equity,
            available_funds=ctx.available_funds,
            settings=ctx.settings,
        )
        result = sized.result
        plan = BracketPlan(
            instrument=spec.name,
            side=side,
            amount=result.amount,
            stop_price=stop,
            take_profit_price=target,
            signal_price=entry,
            run_id=self.run_id,
            account_id=self.run_row.broker_account_id,
            risk_settings=sized.settings,
            sizing={
                "equity": str(ctx.equity),
                "risk": str(result.risk),
                "risk_currency": result.risk_currency,
                "risk_usd": str(result.risk_usd),
                "leverage": str(result.leverage),
            },
            signal=signal.as_dict(),
            **({"bracket_id": armed.bracket_id} if armed is not None else {}),
        )
        return plan, sized

    def _check_open_trades(self, limits: Any, open_now: int) -> None:
        """``max_open_trades``: no new bracket while that many brackets of ours (this broker and
        account, any instrument, any state that may hold a position) are live. The loop trades
        only when flat, so it holds one position per instrument at a time whatever the setting;
        a higher setting lets other runs/instruments (or a bracket still being resolved) count
        against the same limit."""
        from apps.risk.protections import open_trades_trip

        trip = open_trades_trip(limits, open_now)
        if trip is not None:
            raise SignalRefused(trip.message, code=str(trip.code))

    def _check_protections(self, ctx: EntryContext, limits: Any) -> None:
        """Drawdown, daily loss and cooldown, on the gathered trades and equity, at the clock
        of the close."""
        from apps.risk.protections import protection_tripped

        self.peak_equity = max(self.peak_equity, ctx.equity)
        trip = protection_tripped(
            limits=limits,
            trades=ctx.trades,
            equity=ctx.equity,
            peak_equity=self.peak_equity,
            now=timezone.now(),
        )
        if trip is not None:
            raise ProtectionTripped(str(trip.code), trip.message)

    # --- following the position ----------------------------------------------------------------

    def _follow_position(self, *, together: bool = False) -> None:
        """Check the open bracket; record its trade if it closed.

        A close is ONE write (one statement on PostgreSQL, ``fastsql.write_all``): the legs'
        rows, the trade computed from the broker's fills, the bracket closed and the run's
        moves to CLOSING and back to ANALYZING (these only while the run is still this loop's;
        the trade is recorded in any case). Its events (the moves, the trade) wait in
        ``after_close``: they are sent once no candle waits, or right after the next candle's
        decision, so a candle that comes with the close (a stop or target filled on its open)
        is decided first.

        The reads a close needs go out with the legs' states once the position reads flat, in
        one round trip (with the position's too, ``together``, on a candle or when the
        broker's stream said a leg filled: see ``bracket_read``): the bracket's fills, our
        open orders (the orphan sweep) and, for a broker that pushes every account change, the
        next entry's equity and positions. From them the next entry's context is built once
        the rows are written (with the settings read while the position was open,
        ``standing``), so a decision on the candle of the close reads only the database."""
        self.next_position_check = time.monotonic() + self.poll
        bracket = self.bracket
        ahead = self._account_ahead()
        calls = ahead or [OUR_ORDERS]
        together, self.close_hinted = together or self.close_hinted, False
        check = bracket_read(
            self.gateway, bracket, when_flat=calls, together=together, rows=self._legs(bracket)
        )
        if not check.closed:
            bracket_rows_write(bracket, changed=check.changed)
            if check.position_size != 0 and not check.stop_live:
                self.lock.check()
                self.legs = None  # a stop placed to re-protect it is a new row
                bracket_protect(self.gateway, bracket, policy=self.policy)
            return
        computed = trade_compute(  # the fills read with the legs (read again if that failed)
            self.gateway, bracket, exit_reason=check.exit_reason, fills=check.fills
        )
        path = self._close_path(check.exit_reason, bracket.bracket_id, traded=computed is not None)
        # ONE write: the legs' rows, the trade and the bracket closed, and the run's moves if
        # it is still this loop's (the trade is recorded even if the run was stopped or taken
        # over meanwhile)
        trade, new, moved = bracket_rows_write(
            bracket,
            changed=check.changed,
            closed=computed,
            guard=path.guard if path is not None else None,
            guarded=path.rows if path is not None else (),
        )
        closed = [computed.announce] if new else []  # the trade's event
        moves = path.announcements if path is not None and moved else []
        if moves:
            self.state = path.final
            run_path_written(path)
        # in history's order: the move to CLOSING, the trade, the move back to ANALYZING
        closing = sum(1 for move in moves if move["to"] == RunState.CLOSING)
        self.after_close.append(functools.partial(run_announce, moves[:closing]))
        self.after_close += closed
        self.after_close.append(functools.partial(run_announce, moves[closing:]))
        if not moved:
            raise LoopExit(self._why_refused())
        if trade is None:
            self.trade_misses += 1
            if self.trade_misses > 5:
                raise BrokerError(
                    f"bracket {bracket.bracket_id} closed but its fills are incomplete"
                )
            return
        self.trade_misses = 0
        self.bracket = None
        self._strategy_trade_closed(trade)
        read = not any(isinstance(answer, BaseException) for answer in check.also)
        orders = check.also[calls.index(OUR_ORDERS)] if read else None
        swept = orphan_sweep_once(  # a leg the exchange left behind
            self.gateway, run_id=self.run_id, orders=orders, guard=self.lock.check
        )
        if ahead and read and not (swept["cancelled"] or swept["failed"]):
            summary, orders, positions = check.also
            standing, self.standing = self.standing, None
            self.ready = self._gather(account=(summary, orders, positions), standing=standing)

    def _legs(self, bracket: Bracket) -> list[Any]:
        """The open bracket's placed order rows, read once: they change only through
        ``bracket_read``'s writes (made on these objects), a re-protect (which drops them) or
        a reconcile (which drops them)."""
        if self.legs is None or self.legs[0] != bracket.pk:
            self.legs = (bracket.pk, bracket_leg_rows(bracket))
        return self.legs[1]

    def _account_ahead(self) -> list[tuple[str, tuple[Any, ...]]]:
        """The next entry's account reads (``account_reads``), to go out with a close's, for a
        broker that pushes every account change (what was read stays true until an event);
        none for the others, whose account is read at the close."""
        currency = instrument_spec(self.gateway, self.run_row.instrument).settlement_currency
        if not self.gateway.pushes_account_changes(currency):
            return []
        return account_reads(currency)

    def _close_path(self, reason: str, bracket_id: str, *, traded: bool) -> Any:
        """The run's moves at a close (``run_path``): to CLOSING (unless there already) and,
        once the trade is recorded, back to ANALYZING. None: no move to make."""
        context = {"bracket": bracket_id}
        steps = []
        if self.state is not RunState.CLOSING:
            steps.append(Step(RunState.CLOSING, reason, "", context))
        if traded:
            steps.append(Step(RunState.ANALYZING, "trade_closed", "", context))
        if not steps:
            return None
        return run_path(run_id=self.run_id, start=self.state, steps=steps, fence=self.fence)

    def _strategy_trade_closed(self, trade: Trade) -> None:
        from apps.strategies.base import ClosedTrade

        self.strategy.on_trade_closed(
            ClosedTrade(
                side=Side(trade.side),
                entry_price=trade.entry_price,
                exit_price=trade.exit_price,
                amount=trade.amount,
                pnl=trade.pnl + trade.fees,  # before fees, as the backtest gives it
                fees=trade.fees,
                entry_time_ms=int(trade.opened_at.timestamp() * 1000),
                exit_time_ms=int(trade.closed_at.timestamp() * 1000),
                reason=trade.exit_reason,
            )
        )

    # --- live page ------------------------------------------------------------------------------

    def _push_checkpoints(self, signal: Any) -> None:
        state = self.strategy.state()
        checkpoints = state.get("checkpoints", [])
        try:
            import json

            redis_client().set(
                rkey(CHECKPOINTS_KEY),
                json.dumps({"run_id": self.run_id, "at": _now_iso(), **state}, default=str),
                ex=3600,
            )
        except Exception:
            log.debug("checkpoints not stored", exc_info=True)
        rows = format_html_join(
            "",
            '<li class="checkpoint {}"><span>{}</span> <b>{}</b></li>',
            (
                ("passed" if c.get("passed") else "failed", c.get("name"), c.get("value"))
                for c in checkpoints
            ),
        )
        live_push(
            format_html(
                '<ul id="run-checkpoints" hx-swap-oob="true" data-run="{}">{}</ul>',
                self.run_id,
                rows,
            )
        )


def _may_close(bracket: Bracket, change: Any) -> bool:
    """Whether an order or fill event may have closed (or unprotected) ``bracket``, so that it
    is checked at once; the others wait for the next poll. Not: our own entry filling or
    resting, or one of its legs resting (placed, or edited) with nothing filled."""
    entry_label, stop_label, tp_label = bracket_labels(bracket.bracket_id)
    label = getattr(change, "label", "") or ""
    if label == entry_label:
        state = getattr(change, "state", OrderState.FILLED)  # a fill has no state: it filled
        return state not in (OrderState.FILLED, OrderState.OPEN, OrderState.UNTRIGGERED)
    if label in (stop_label, tp_label) and isinstance(change, BrokerOrder):
        resting = change.state in (OrderState.OPEN, OrderState.UNTRIGGERED)
        return not (resting and change.filled_amount == 0)
    return True


def _signal_context(signal: Any) -> dict[str, str]:
    return {
        "side": str(signal.side),
        "entry": str(signal.entry),
        "stop": str(signal.stop),
        "take_profit": str(signal.take_profit),
    }


def _now_iso() -> str:
    return datetime.now(tz=UTC).isoformat()
