"""Writes and live queries for broker accounts: one active broker, encrypted credentials.

The web process never holds a broker connection for long: connect, test and reconnect open one,
read the account and close it again. The live connection belongs to the runner, which builds its
broker with ``broker_build(account=active_account())``, writes the account snapshot with
``broker_account_record_snapshot`` and reports a dropped socket with
``broker_account_mark_disconnected``. Reconnecting is manual (``broker_account_reconnect``).

Secrets: an API key or secret never reaches a log line, an exception message or ``last_error``;
every broker error text goes through ``_scrub`` first.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.brokers import crypto, registry
from apps.brokers.base import (
    AccountSummary,
    AuthenticationFailed,
    Broker,
    BrokerError,
    ConnectionLost,
    ConnectionState,
    InstrumentSpec,
    RetryableError,
)
from apps.brokers.models import BrokerAccount
from apps.brokers.selectors import active_account, trading_busy_reason

log = logging.getLogger(__name__)

__all__ = [
    "BrokerAuthFailed",
    "BrokerBusy",
    "BrokerServiceError",
    "BrokerUnavailable",
    "BrokerUnreachable",
    "NoActiveAccount",
    "active_account",
    "active_broker_equity",
    "broker_account_connect",
    "broker_account_disconnect",
    "broker_account_mark_disconnected",
    "broker_account_reconnect",
    "broker_account_record_snapshot",
    "broker_accounts_reconcile",
    "broker_build",
    "broker_test_connection",
    "credentials_rotate",
    "instrument_specs",
    "paper_equity",
]

# One connect/test may take this long in all (connect, authenticate, read, close).
TEST_TIMEOUT_SECONDS = 20.0
# Instrument specs are re-read from the broker after this many seconds.
SPECS_REFRESH_SECONDS = 300
# A snapshot younger than this is good enough for sizing; older ones are re-read live.
EQUITY_MAX_AGE_SECONDS = 30

# The currency whose balance a connection test reports, per broker.
SUMMARY_CURRENCY: dict[str, str] = {
    "deribit": "USDC",
    "paper": "USDC",
    "coinbase": "USD",
    "bitstamp": "USD",
    "bitfinex": "USD",
    "kraken": "USD",
}
DEFAULT_SUMMARY_CURRENCY = "USDT"


def summary_currency(broker_id: str) -> str:
    return SUMMARY_CURRENCY.get(broker_id, DEFAULT_SUMMARY_CURRENCY)


# --- errors ---------------------------------------------------------------------------------


@dataclass
class BrokerServiceError(Exception):
    """A refusal or failure a trader can read. ``message`` is safe: it never holds a secret."""

    status: int
    code: str
    message: str

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class BrokerAuthFailed(BrokerServiceError):
    def __init__(self, message: str) -> None:
        super().__init__(422, "BROKER_AUTH_FAILED", message)


class BrokerUnreachable(BrokerServiceError):
    def __init__(self, message: str) -> None:
        super().__init__(502, "BROKER_UNREACHABLE", message)


class BrokerRefused(BrokerServiceError):
    def __init__(self, message: str) -> None:
        super().__init__(422, "BROKER_ERROR", message)


class BrokerUnavailable(BrokerServiceError):
    """The adapter cannot be built (e.g. the pinned ccxt lacks the exchange)."""

    def __init__(self, message: str) -> None:
        super().__init__(422, "BROKER_UNAVAILABLE", message)


class BrokerBusy(BrokerServiceError):
    def __init__(self, message: str) -> None:
        super().__init__(409, "BROKER_BUSY", message)


class NoActiveAccount(BrokerServiceError):
    def __init__(self, message: str = "No broker account is connected.") -> None:
        super().__init__(409, "NO_ACTIVE_ACCOUNT", message)


def _scrub(text: str, *secrets: str) -> str:
    """``text`` with every given credential replaced by ``****`` (no hint of it, not even the
    last characters), then the generic secret patterns masked."""
    from apps.monitoring.logging import mask_secrets

    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, "****")
    return mask_secrets(text)[:500]


def _classify(exc: BaseException, info: registry.BrokerInfo, *secrets: str) -> BrokerServiceError:
    name = info.name
    if isinstance(exc, AuthenticationFailed):
        detail = _scrub(exc.message or "", *secrets)
        return BrokerAuthFailed(
            f"{name} refused the API key and secret"
            + (f" ({detail})" if detail else "")
            + ". Check them, and that they belong to the chosen network (testnet or mainnet)."
        )
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return BrokerUnreachable(f"{name} did not answer within {TEST_TIMEOUT_SECONDS:.0f} s.")
    if isinstance(exc, ConnectionLost | RetryableError | OSError):
        detail = _scrub(str(exc) or type(exc).__name__, *secrets)
        return BrokerUnreachable(f"{name} could not be reached: {detail}")
    if isinstance(exc, BrokerError):
        return BrokerRefused(f"{name} answered with an error: {_scrub(str(exc), *secrets)}")
    detail = _scrub(str(exc), *secrets)
    return BrokerUnreachable(f"{name} failed: {type(exc).__name__}: {detail}")


# --- running coroutines from sync code ------------------------------------------------------


def _run(coro: Any) -> Any:
    """Run a coroutine to completion from sync code (a view, a command, a Celery task)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with ThreadPoolExecutor(max_workers=1) as pool:  # called from async code: own thread
        return pool.submit(asyncio.run, coro).result()


# --- building a broker ----------------------------------------------------------------------


def _instantiate(
    info: registry.BrokerInfo,
    *,
    api_key: str,
    api_secret: str,
    testnet: bool,
    auto_reconnect: bool = False,
    persist_paper: bool = False,
) -> Broker:
    """``persist_paper``: the paper account is the one stored in the database (only the
    process that trades on it may say so: a second stored paper broker would take the row
    over from the running loop's)."""
    try:
        adapter = registry.import_adapter(info.adapter)
    except (ImportError, AttributeError) as exc:
        raise BrokerUnavailable(f"The {info.name} adapter is not available: {exc}") from exc
    if info.id == registry.PAPER_ID:
        return adapter(speed=settings.PAPER_SPEED, persist=persist_paper)
    if info.adapter == registry.DERIBIT_ADAPTER:
        return adapter(
            api_key,
            api_secret,
            url=settings.TRADEBAAS_DERIBIT_URL or None,
            testnet=testnet,
            auto_reconnect=auto_reconnect,
        )
    try:
        return adapter(api_key, api_secret, broker_id=info.id, testnet=testnet)
    except ValueError as exc:  # e.g. the pinned ccxt has no class for this exchange
        raise BrokerUnavailable(str(exc)) from exc


def broker_build(*, account: BrokerAccount | None) -> Broker:
    """The adapter for ``account`` (not connected yet), or the paper broker for None."""
    if account is None:
        # the paper account lives in the database: a restarted loop finds its position
        return _instantiate(
            registry.PAPER, api_key="", api_secret="", testnet=True, persist_paper=True
        )
    return _instantiate(
        registry.get_broker_info(account.broker),
        api_key=account.api_key,
        api_secret=account.api_secret,
        testnet=account.testnet,
        auto_reconnect=account.auto_reconnect,
    )


async def _read_summary(broker: Broker, currency: str) -> AccountSummary:
    await broker.connect()
    try:
        return await broker.account_summary(currency)
    finally:
        try:
            await broker.disconnect()
        except Exception:  # closing a half-open link must not hide the answer
            log.warning("broker disconnect after a test failed", exc_info=False)


def broker_test_connection(
    *,
    broker_id: str,
    api_key: str,
    api_secret: str,
    testnet: bool,
    currency: str | None = None,
) -> AccountSummary:
    """Connect with these credentials, read the balance, disconnect. Stores nothing."""
    info = registry.get_broker_info(broker_id)
    broker = _instantiate(info, api_key=api_key, api_secret=api_secret, testnet=testnet)
    currency = currency or summary_currency(broker_id)
    started = time.monotonic()
    try:
        summary = _run(
            asyncio.wait_for(_read_summary(broker, currency), timeout=TEST_TIMEOUT_SECONDS)
        )
    except BrokerServiceError:
        raise
    except Exception as exc:
        error = _classify(exc, info, api_key, api_secret)
        log.info(
            "broker test failed",
            extra={"broker": broker_id, "testnet": testnet, "error_code": error.code},
        )
        raise error from None
    log.info(
        "broker test ok",
        extra={
            "broker": broker_id,
            "testnet": testnet,
            "seconds": round(time.monotonic() - started, 3),
        },
    )
    return summary


# --- account lifecycle ----------------------------------------------------------------------


def _ensure_not_busy() -> None:
    reason = trading_busy_reason()
    if reason:
        raise BrokerBusy(reason)


def _find_account(*, broker_id: str, testnet: bool, api_key: str) -> BrokerAccount | None:
    """An existing account of the same broker, network and key (credentials get updated)."""
    for account in BrokerAccount.objects.filter(broker=broker_id, testnet=testnet):
        try:
            if account.api_key == api_key:
                return account
        except crypto.CredentialsUnreadable:
            continue
    return None


def _apply_snapshot(account: BrokerAccount, summary: AccountSummary, now: Any) -> None:
    account.snapshot_equity = summary.equity
    account.snapshot_available = summary.available_funds
    account.snapshot_currency = summary.currency
    account.snapshot_at = now


def broker_account_connect(
    *,
    broker_id: str,
    api_key: str,
    api_secret: str,
    testnet: bool,
    label: str = "",
    auto_reconnect: bool = False,
) -> BrokerAccount:
    """Test the credentials; on success store them encrypted and make this THE active account.

    Refused (409) while a run is active or a position is open. The previously active account is
    disconnected first. A failed test stores nothing.
    """
    if not registry.is_listed(broker_id):
        raise registry.UnknownBroker(broker_id)
    _ensure_not_busy()
    summary = broker_test_connection(
        broker_id=broker_id, api_key=api_key, api_secret=api_secret, testnet=testnet
    )
    now = timezone.now()
    try:
        with transaction.atomic():
            _ensure_not_busy()  # again: a run may have started during the test
            for old in BrokerAccount.objects.select_for_update().filter(is_active=True):
                old.is_active = False
                old.state = ConnectionState.DISCONNECTED.value
                old.state_since = now
                old.save(update_fields=["is_active", "state", "state_since", "updated_at"])
                log.info("broker account deactivated", extra={"account_id": old.pk})
            account = _find_account(broker_id=broker_id, testnet=testnet, api_key=api_key)
            account = account or BrokerAccount(broker=broker_id, testnet=testnet)
            account.set_credentials(api_key=api_key, api_secret=api_secret)
            account.label = label or account.label
            account.auto_reconnect = auto_reconnect
            account.is_active = True
            account.state = ConnectionState.CONNECTED.value
            account.state_since = now
            account.last_error = ""
            account.last_connected_at = now
            _apply_snapshot(account, summary, now)
            account.save()
    except IntegrityError as exc:  # another connect won the race for "active"
        raise BrokerBusy("Another broker account was connected at the same moment.") from exc
    _specs_forget(account)
    log.info(
        "broker account connected",
        extra={"account_id": account.pk, "broker": broker_id, "testnet": testnet},
    )
    return account


def broker_account_disconnect(*, account: BrokerAccount | None = None) -> BrokerAccount:
    """Mark the active account disconnected (it stays selected; reconnect brings it back).

    Refused (409) while a run is active or a position is open.
    """
    account = account or active_account()
    if account is None:
        raise NoActiveAccount()
    _ensure_not_busy()
    _set_state(account, ConnectionState.DISCONNECTED, error="")
    log.info("broker account disconnected by the trader", extra={"account_id": account.pk})
    return account


def broker_account_reconnect(*, account: BrokerAccount | None = None) -> BrokerAccount:
    """Manual reconnect: test the stored credentials again; connected on success, error state
    (with a safe message) on failure, and the error is raised."""
    account = account or active_account()
    if account is None:
        raise NoActiveAccount("No broker account to reconnect: connect one first.")
    _set_state(account, ConnectionState.CONNECTING, error=None)
    try:
        summary = broker_test_connection(
            broker_id=account.broker,
            api_key=account.api_key,
            api_secret=account.api_secret,
            testnet=account.testnet,
        )
    except crypto.CredentialsUnreadable as exc:
        _set_state(account, ConnectionState.ERROR, error=str(exc))
        raise BrokerAuthFailed(str(exc)) from None
    except BrokerServiceError as exc:
        _set_state(account, ConnectionState.ERROR, error=exc.message)
        raise
    now = timezone.now()
    account.state = ConnectionState.CONNECTED.value
    account.state_since = now
    account.last_error = ""
    account.last_connected_at = now
    _apply_snapshot(account, summary, now)
    account.save()
    log.info("broker account reconnected", extra={"account_id": account.pk})
    return account


def broker_account_mark_disconnected(*, account: BrokerAccount, reason: str) -> bool:
    """The live connection dropped (called by the runner). True if the state changed.

    A conditional UPDATE: a drop reported twice, or after a manual disconnect, changes nothing.
    The reason is scrubbed of the account's own credentials before it is stored.
    """
    try:
        safe = _scrub(reason, account.api_key, account.api_secret)
    except crypto.CredentialsUnreadable:
        safe = _scrub(reason)
    changed = (
        BrokerAccount.objects.filter(pk=account.pk)
        .exclude(state=ConnectionState.DISCONNECTED.value)
        .update(
            state=ConnectionState.DISCONNECTED.value,
            state_since=timezone.now(),
            last_error=safe,
            updated_at=timezone.now(),
        )
    )
    account.refresh_from_db()
    if changed:
        log.warning("broker connection lost", extra={"account_id": account.pk, "reason": safe})
    return bool(changed)


def broker_account_record_snapshot(*, account: BrokerAccount, summary: AccountSummary) -> None:
    """Store the account summary read by the holder of the live connection."""
    now = timezone.now()
    BrokerAccount.objects.filter(pk=account.pk).update(
        snapshot_equity=summary.equity,
        snapshot_available=summary.available_funds,
        snapshot_currency=summary.currency,
        snapshot_at=now,
    )
    _apply_snapshot(account, summary, now)


def broker_accounts_reconcile() -> BrokerAccount | None:
    """At start-up: the active account's stored state is a memory of the last process. If it
    says connected (or connecting), test the credentials again; the state then says what is
    true now. A disconnected or errored account stays so until a manual reconnect."""
    account = active_account()
    if account is None or account.state not in (
        ConnectionState.CONNECTED.value,
        ConnectionState.CONNECTING.value,
    ):
        return account
    try:
        return broker_account_reconnect(account=account)
    except BrokerServiceError:
        account.refresh_from_db()
        return account


def _set_state(account: BrokerAccount, state: ConnectionState, *, error: str | None) -> None:
    account.state = state.value
    account.state_since = timezone.now()
    fields = ["state", "state_since", "updated_at"]
    if error is not None:
        account.last_error = error
        fields.append("last_error")
    account.save(update_fields=fields)


def credentials_rotate() -> int:
    """Re-encrypt every stored credential with the newest key; returns the number of accounts."""
    count = 0
    with transaction.atomic():
        for account in BrokerAccount.objects.select_for_update().order_by("pk"):
            account.api_key_encrypted = crypto.rotate(account.api_key_encrypted)
            account.api_secret_encrypted = crypto.rotate(account.api_secret_encrypted)
            account.save(update_fields=["api_key_encrypted", "api_secret_encrypted"])
            count += 1
    log.info("broker credentials re-encrypted", extra={"accounts": count})
    return count


# --- live reads -----------------------------------------------------------------------------


def _connected(account: BrokerAccount | None) -> bool:
    return account is not None and account.state == ConnectionState.CONNECTED.value


def paper_equity(currency: str) -> Decimal:
    """The paper account's equity in ``currency`` as last stored by the loop's paper broker
    (read from the row, never claimed); its starting balance when none is stored yet."""
    from apps.brokers.models import PaperExchangeState
    from apps.brokers.simulator.engine import ExchangeEngine
    from apps.brokers.simulator.errors import ExchangeError
    from apps.brokers.simulator.instruments import DEFAULT_BALANCES
    from apps.brokers.simulator.snapshot import SnapshotError, account_restore

    row = PaperExchangeState.objects.only("data").first()
    if row is not None:
        engine = ExchangeEngine(now_ms=0)
        try:
            account_restore(row.data, engine)
            return engine.account(currency).equity
        except (SnapshotError, ExchangeError) as exc:
            log.warning("stored paper account unreadable (%s); showing the starting balance", exc)
    return DEFAULT_BALANCES.get(currency, Decimal("0"))


def active_broker_equity(*, currency: str) -> Decimal:
    """Equity of the active account in ``currency``: its snapshot when fresh, else read live
    (and stored). With no account connected: the paper account's (``paper_equity``)."""
    account = active_account()
    if not _connected(account):
        return paper_equity(currency)
    assert account is not None
    fresh_after = timezone.now() - timedelta(seconds=EQUITY_MAX_AGE_SECONDS)
    if (
        account.snapshot_at is not None
        and account.snapshot_at >= fresh_after
        and account.snapshot_currency == currency
        and account.snapshot_equity is not None
    ):
        return account.snapshot_equity
    summary = broker_test_connection(
        broker_id=account.broker,
        api_key=account.api_key,
        api_secret=account.api_secret,
        testnet=account.testnet,
        currency=currency,
    )
    broker_account_record_snapshot(account=account, summary=summary)
    return summary.equity


def _specs_key(account: BrokerAccount | None) -> str:
    return f"brokers:specs:{account.pk if account else 'simulator'}"


def _specs_forget(account: BrokerAccount) -> None:
    cache.delete(_specs_key(account))


async def _read_specs(broker: Broker) -> list[InstrumentSpec]:
    await broker.connect()
    try:
        return list(await broker.instruments())
    finally:
        try:
            await broker.disconnect()
        except Exception:
            log.warning("broker disconnect after reading instruments failed", exc_info=False)


@dataclass(frozen=True)
class SpecsRead:
    specs: list[InstrumentSpec]
    source: str  # "broker" (read now), "cache" (read within the refresh interval), "simulator"
    read_at: float  # unix seconds


def instrument_specs_read(*, refresh: bool = False) -> SpecsRead:
    """The active broker's instruments, re-read every SPECS_REFRESH_SECONDS. With no account
    connected: the simulator's built-in specs. If a refresh fails, the last specs read stay in
    use (they are the broker's, only older)."""
    account = active_account()
    if not _connected(account):
        from apps.brokers.simulator.instruments import default_specs

        return SpecsRead(list(default_specs().values()), "simulator", time.time())
    key = _specs_key(account)
    cached = cache.get(key)
    if cached and not refresh and time.time() - cached["at"] < SPECS_REFRESH_SECONDS:
        return SpecsRead(cached["specs"], "cache", cached["at"])
    assert account is not None
    broker = broker_build(account=account)
    info = registry.get_broker_info(account.broker)
    try:
        specs = _run(asyncio.wait_for(_read_specs(broker), timeout=TEST_TIMEOUT_SECONDS))
    except Exception as exc:
        error = _classify(exc, info, account.api_key, account.api_secret)
        if cached:
            log.warning("instrument refresh failed; keeping the last specs: %s", error.message)
            return SpecsRead(cached["specs"], "cache", cached["at"])
        raise error from None
    now = time.time()
    cache.set(key, {"at": now, "specs": specs}, timeout=None)
    return SpecsRead(specs, "broker", now)


def instrument_specs(*, refresh: bool = False) -> list[InstrumentSpec]:
    """The specs trading logic must use (never hard-coded): see ``instrument_specs_read``."""
    return instrument_specs_read(refresh=refresh).specs


def instrument_spec(*, name: str) -> InstrumentSpec:
    """One instrument's spec; ``KeyError`` naming it when the broker does not list it."""
    for spec in instrument_specs():
        if spec.name == name:
            return spec
    raise KeyError(f"instrument {name!r} is not listed by the active broker")


def broker_account_set_auto_reconnect(*, account: BrokerAccount, enabled: bool) -> BrokerAccount:
    """Turn automatic reconnection (back-off with jitter, by the live connection's holder) on or
    off. Off by default: a lost connection then stays down until a manual reconnect."""
    account.auto_reconnect = enabled
    account.save(update_fields=["auto_reconnect", "updated_at"])
    log.info("broker auto-reconnect changed", extra={"account_id": account.pk, "enabled": enabled})
    return account
