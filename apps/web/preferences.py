"""The strategy card's choices (kept per trader), the risk inputs (saved to RiskSettings, which
the loop reads fresh for every trade) and the live size preview."""

from __future__ import annotations

import csv
from decimal import Decimal, InvalidOperation
from functools import cache
from typing import Any

from django.core.exceptions import ValidationError

from apps.brokers.base import Side
from apps.brokers.services import BrokerServiceError, active_broker_equity, instrument_spec
from apps.monitoring import chart
from apps.risk.models import RiskMode, RiskSettings
from apps.risk.services import risk_settings_get, risk_settings_update
from apps.risk.sizing import SizingRefused, size_position

from .backtests import SAMPLE_DIR
from .models import TraderPreferences

DEFAULT_STOP_PCT = Decimal("1")
# Form field names of the strategy card for RiskSettings fields.
RISK_FIELD_NAMES = {
    "mode": "risk_mode",
    "value": "risk_value",
    "max_open_trades": "max_open_trades",
}


class FormError(Exception):
    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


def strategy_form_initial(user, run) -> dict[str, Any]:
    risk = risk_settings_get()
    form = {
        "strategy": "fast_test",
        "instrument": "BTC-PERPETUAL",
        "params": {},
        "risk_mode": risk.mode,
        "risk_value": f"{risk.value.normalize():f}",
        "max_open_trades": risk.max_open_trades,
    }
    if run is not None:
        form.update(strategy=run.strategy, instrument=run.instrument, params=run.params)
    elif getattr(user, "pk", None):
        prefs = TraderPreferences.objects.filter(user=user).first()
        if prefs and prefs.strategy:
            form.update(
                strategy=prefs.strategy,
                instrument=prefs.instrument or form["instrument"],
                params=prefs.params,
            )
    return form


def remember(user, form: dict[str, Any]) -> None:
    if getattr(user, "pk", None):
        TraderPreferences.objects.update_or_create(
            user=user,
            defaults={
                "strategy": form["strategy"],
                "instrument": form["instrument"],
                "params": form["params"],
            },
        )


def _validation_errors(exc: ValidationError, names: dict[str, str]) -> dict[str, str]:
    if hasattr(exc, "message_dict"):
        return {
            names.get(field, field): " ".join(messages)
            for field, messages in exc.message_dict.items()
        }
    return {"form": " ".join(exc.messages)}


def risk_from_form(form: dict[str, Any]) -> None:
    """Validate the card's risk inputs and save them; FormError names the card's fields."""
    errors: dict[str, str] = {}
    if form["risk_mode"] not in RiskMode.values:
        errors["risk_mode"] = "Choose % of equity or a fixed amount."
    try:
        value = Decimal(str(form["risk_value"]))
        if not value.is_finite():
            raise InvalidOperation
    except (InvalidOperation, ValueError):
        errors["risk_value"] = "Enter a number."
    try:
        max_trades = int(form["max_open_trades"])
    except (TypeError, ValueError):
        errors["max_open_trades"] = "Enter a whole number."
    if errors:
        raise FormError(errors)
    try:
        risk_settings_update(mode=form["risk_mode"], value=value, max_open_trades=max_trades)
    except ValidationError as exc:
        raise FormError(_validation_errors(exc, RISK_FIELD_NAMES)) from None


@cache
def _sample_last_close() -> Decimal | None:
    path = next(iter(sorted(SAMPLE_DIR.glob("*.csv"))), None)
    if path is None:
        return None
    last = None
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            last = row["close"]
    return Decimal(last) if last else None


def _reference_price(instrument: str) -> Decimal | None:
    points = chart.candles(instrument)
    if points:
        return Decimal(str(points[-1]["close"]))
    if instrument.startswith("BTC"):
        return _sample_last_close()
    return None


def preview_from_form(data) -> dict[str, Any]:
    """Size an example long at the latest price with the strategy's stop distance."""
    instrument = data.get("instrument", "")
    try:
        spec = instrument_spec(name=instrument)
    except (KeyError, BrokerServiceError):
        return {"error": f"Unknown instrument {instrument!r}.", "code": "INVALID_INPUT"}
    entry = _reference_price(instrument)
    if entry is None:
        return {
            "error": "No recent price yet: the preview appears after the first candle.",
            "code": "NO_PRICE",
        }
    try:
        value = Decimal(data.get("risk_value", ""))
        stop_pct = Decimal(data.get("param_stop_loss_pct") or DEFAULT_STOP_PCT)
    except InvalidOperation:
        return {"error": "Enter a number for the risk.", "code": "INVALID_INPUT"}
    tick = spec.tick_size
    entry = (entry / tick).to_integral_value() * tick
    stop = (entry * (1 - stop_pct / 100) / tick).to_integral_value() * tick
    settings = risk_settings_get()
    try:
        equity = active_broker_equity(currency=spec.settlement_currency)
        result = size_position(
            spec=spec,
            side=Side.BUY,
            entry=entry,
            stop=stop,
            equity=equity,
            mode=data.get("risk_mode", settings.mode),
            value=value,
            leverage_cap=settings.leverage_cap,
            include_fees=settings.include_fees,
        )
    except SizingRefused as refused:
        return {"error": refused.message, "code": refused.code.value}
    except BrokerServiceError as exc:
        return {"error": exc.message, "code": exc.code}
    unit = "USD" if spec.is_inverse else spec.base_currency
    return {
        "entry": entry,
        "stop": stop,
        "amount": f"{result.amount.normalize():f}",
        "unit": unit,
        "risk": f"{result.risk.quantize(Decimal('0.00000001')).normalize():f}",
        "risk_currency": result.risk_currency,
        "risk_usd": f"{result.risk_usd.quantize(Decimal('0.01'))}",
        "leverage": f"{result.leverage.quantize(Decimal('0.01'))}",
        "warnings": [w.message for w in result.warnings],
    }


RISK_TAB_FIELDS = (
    ("mode", "Risk mode", "choice"),
    ("value", "Risk value (% of equity or USD)", "number"),
    ("leverage_cap", "Leverage cap", "number"),
    ("max_open_trades", "Max open trades", "number"),
    ("include_fees", "Count entry and stop fees inside the risk", "bool"),
    ("cooldown_minutes", "Cooldown after a stop-out (minutes, 0 = off)", "number"),
    (
        "daily_loss_limit_pct",
        "Daily loss limit (% of the day's starting equity, empty = off)",
        "number",
    ),
    ("max_drawdown_pct", "Max drawdown from peak equity (%, empty = off)", "number"),
)


def risk_settings_fields(data=None, errors: dict[str, str] | None = None) -> list[dict[str, Any]]:
    settings = risk_settings_get()
    errors = errors or {}
    fields = []
    for name, label, kind in RISK_TAB_FIELDS:
        if data is not None:
            value = (data.get(name) == "1") if kind == "bool" else data.get(name, "")
        else:
            value = getattr(settings, name)
            if isinstance(value, Decimal):
                value = f"{value.normalize():f}"
        fields.append(
            {
                "name": name,
                "label": label,
                "type": kind,
                "value": value,
                "choices": RiskMode.choices if kind == "choice" else (),
                "help": _help_text(name),
                "error": errors.get(name, ""),
            }
        )
    return fields


def _help_text(name: str) -> str:
    return str(RiskSettings._meta.get_field(name).help_text or "")


def risk_settings_save(data) -> tuple[list[dict[str, Any]], bool]:
    changes: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for name, _label, kind in RISK_TAB_FIELDS:
        raw = data.get(name, "")
        if kind == "bool":
            changes[name] = raw == "1"
        elif kind == "choice":
            changes[name] = raw
        elif raw.strip() == "":
            if name in ("daily_loss_limit_pct", "max_drawdown_pct"):
                changes[name] = None
            else:
                errors[name] = "This field is required."
        else:
            try:
                number = Decimal(raw)
                if not number.is_finite():
                    raise InvalidOperation
                changes[name] = (
                    int(number) if name in ("max_open_trades", "cooldown_minutes") else number
                )
                if name in ("max_open_trades", "cooldown_minutes") and number != int(number):
                    errors[name] = "Enter a whole number."
            except (InvalidOperation, ValueError):
                errors[name] = "Enter a number."
    if not errors:
        try:
            risk_settings_update(**changes)
        except ValidationError as exc:
            errors = _validation_errors(exc, {})
    if errors:
        return risk_settings_fields(data, errors), False
    return risk_settings_fields(), True
