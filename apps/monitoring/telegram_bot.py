"""Telegram commands: the trader's phone as a small remote control.

``poll_once()`` long-polls ``getUpdates``, stores the next offset *before* acting (a crash never
replays a command), answers only the configured chat, and replies with ``sendMessage``.
``python manage.py telegram_bot`` runs it in a loop (a systemd unit, or the supervisor's
``telegram`` child). Commands:

/status /balance /profit /trades /stop /pause /help — always;
/start /resume /restart — only when remote start is enabled in the notification settings.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from decimal import Decimal

from .models import NotificationSettings
from .notify import TelegramError, bot_call

log = logging.getLogger(__name__)
REMOTE_START_COMMANDS = {"/start", "/resume", "/restart"}
TRADES_SHOWN = 5


def poll_once(*, timeout: float = 25.0) -> int:
    """Fetch and answer pending commands. Returns how many updates were handled.

    Raises TelegramError when the Bot API cannot be reached (the caller backs off).
    """
    config = NotificationSettings.load()
    if not config.telegram_ready:
        return 0
    token = config.telegram_bot_token
    updates = bot_call(
        token,
        "getUpdates",
        {
            "offset": config.telegram_update_offset,
            "timeout": int(timeout),
            "allowed_updates": ["message"],
        },
        timeout=timeout + 10,
    )
    handled = 0
    for update in updates if isinstance(updates, list) else []:
        update_id = int(update.get("update_id", 0))
        # At most once: remember the offset first, so /stop or /start is never replayed.
        NotificationSettings.objects.filter(pk=1).update(telegram_update_offset=update_id + 1)
        message = update.get("message") or {}
        chat_id = str((message.get("chat") or {}).get("id", ""))
        text = (message.get("text") or "").strip()
        handled += 1
        if not text.startswith("/"):
            continue
        if chat_id != str(config.telegram_chat_id):
            log.warning(
                "telegram command %r from chat %s ignored (not the configured chat)",
                text.split()[0][:32],
                chat_id,
            )
            continue
        reply = handle_command(text, remote_start=config.remote_start_enabled)
        try:
            bot_call(token, "sendMessage", {"chat_id": chat_id, "text": reply})
        except TelegramError as exc:
            log.warning("telegram reply not sent: %s", exc)
    return handled


def handle_command(text: str, *, remote_start: bool) -> str:
    command = text.split()[0].split("@")[0].lower()
    if command in REMOTE_START_COMMANDS and not remote_start:
        return (
            f"{command} is disabled: enable remote start in Tradebaas's notification settings "
            "to start or restart runs from Telegram."
        )
    action = COMMANDS.get(command)
    if action is None:
        return f"Unknown command {command}. " + _help()
    try:
        log.info("telegram command %s", command)
        return action()
    except Exception as exc:
        conflict = _conflict_message(exc)
        if conflict is not None:
            return conflict
        log.exception("telegram command %s failed", command)
        return f"{command} failed: {type(exc).__name__}"


def _conflict_message(exc: Exception) -> str | None:
    message = getattr(exc, "message", None)
    if type(exc).__name__ in ("RunConflict", "RunInputError") and message:
        return str(message)
    return None


def _help() -> str:
    return (
        "Commands: /status /balance /profit /trades /stop /pause"
        " — and /start /resume /restart when remote start is enabled."
    )


def _status() -> str:
    from apps.strategies.selectors import active_run, latest_run

    run = active_run()
    if run is None:
        last = latest_run()
        if last is None:
            return "No run yet."
        return (
            f"No active run. Last: run {last.id} ({last.strategy} on {last.instrument}), stopped."
        )
    lines = [f"Run {run.id}: {run.strategy} on {run.instrument}", f"State: {run.state}"]
    if run.pause_reason:
        lines.append(f"Paused: {run.pause_reason}")
    if run.error_message:
        lines.append(f"Error: {run.error_message} — manual restart required")
    from apps.orders.selectors import current_bracket

    bracket = current_bracket(run_id=run.id)
    if bracket:
        lines.append(
            f"Position: {bracket['side']} {bracket['amount']} {bracket['instrument']} "
            f"(SL {bracket['stop_price']}, TP {bracket['take_profit_price']})"
        )
    if run.heartbeat_at:
        lines.append(f"Heartbeat: {run.heartbeat_at:%H:%M:%S} UTC")
    return "\n".join(lines)


def _balance() -> str:
    from apps.brokers.selectors import active_account

    account = active_account()
    if account is None:
        return "No broker account connected: trading on paper."
    snapshot = account.snapshot
    if not snapshot:
        return f"{account}: no balance read yet."
    return (
        f"{account}: equity {snapshot['equity']} {snapshot['currency']}, "
        f"available {snapshot['available_funds']} {snapshot['currency']} (as of {snapshot['at']})"
    )


def _profit() -> str:
    from apps.orders.selectors import trades_summary
    from apps.strategies.selectors import active_run

    lines = []
    run = active_run()
    if run is not None:
        lines.append(_summary_line(f"Run {run.id}", trades_summary(run_id=run.id)))
    lines.append(_summary_line("All time", trades_summary()))
    return "\n".join(lines)


def _summary_line(title: str, summary: dict) -> str:
    if not summary.get("count"):
        return f"{title}: no trades."
    win_rate = Decimal(summary["win_rate"]).quantize(Decimal("0.1")) if summary["win_rate"] else 0
    pnl = Decimal(summary["pnl_usd"]).quantize(Decimal("0.01"))
    return (
        f"{title}: {summary['count']} trades, {summary['wins']} won ({win_rate} %), "
        f"P&L {pnl:+} USD, fees {Decimal(summary['fees']).normalize():f}"
    )


def _trades() -> str:
    from apps.orders.selectors import trades

    rows = list(trades(limit=TRADES_SHOWN))
    if not rows:
        return "No trades yet."
    lines = [f"Last {len(rows)} trades:"]
    for t in rows:
        pnl = Decimal(t.pnl_usd).quantize(Decimal("0.01"))
        lines.append(
            f"{t.closed_at:%m-%d %H:%M} {t.side} {t.amount.normalize()} {t.instrument} "
            f"{t.entry_price.normalize()}→{t.exit_price.normalize()} {pnl:+} USD ({t.exit_reason})"
        )
    return "\n".join(lines)


def _stop() -> str:
    from apps.strategies.services import run_stop

    run = run_stop(reason="stopped from Telegram")
    return f"Run {run.id} stopped. Open positions keep their exchange-side stop and target."


def _pause() -> str:
    from apps.strategies.services import run_pause

    run = run_pause(reason="paused_from_telegram")
    return f"Run {run.id} paused (state {run.state})."


def _start() -> str:
    from apps.strategies.selectors import active_run, latest_run
    from apps.strategies.services import run_resume, run_start

    run = active_run()
    if run is not None:
        if run.state == "PAUSED":
            run = run_resume()
            return f"Run {run.id} resumed."
        if run.state == "ERROR":
            return f"Run {run.id} is in ERROR: use /restart."
        return f"Run {run.id} is already running ({run.state})."
    last = latest_run()
    if last is None:
        return "No earlier run to repeat: start the first run from the dashboard."
    run = run_start(strategy=last.strategy, params=last.params, instrument=last.instrument)
    return f"Run {run.id} started: {run.strategy} on {run.instrument} (as run {last.id})."


def _resume() -> str:
    from apps.strategies.services import run_resume

    run = run_resume()
    return f"Run {run.id} resumed."


def _restart() -> str:
    from apps.strategies.services import run_restart

    run = run_restart()
    return f"Run {run.id} restarted after its error; it reconciles with the broker first."


COMMANDS: dict[str, Callable[[], str]] = {
    "/status": _status,
    "/balance": _balance,
    "/profit": _profit,
    "/trades": _trades,
    "/stop": _stop,
    "/pause": _pause,
    "/start": _start,
    "/resume": _resume,
    "/restart": _restart,
    "/help": _help,
}
