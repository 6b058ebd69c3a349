"""The settings dialog's tabs: broker, risk, notifications. Each POST calls one service and
renders the tab again with the result, field errors next to their fields, and what was typed
(secrets excepted: they are never sent back to the browser)."""

from __future__ import annotations

from typing import Any

from django.contrib.staticfiles.storage import staticfiles_storage
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from apps.brokers import registry
from apps.brokers.models import BrokerAccount
from apps.brokers.selectors import active_account
from apps.brokers.services import (
    BrokerServiceError,
    broker_account_connect,
    broker_account_disconnect,
    broker_account_reconnect,
    broker_account_set_auto_reconnect,
    broker_test_connection,
)

from . import preferences


def _brokers(accounts: dict[str, BrokerAccount]) -> list[dict[str, Any]]:
    rows = []
    for info in registry.BROKERS:
        rows.append(
            {
                "id": info.id,
                "name": info.name,
                "testnet": info.testnet,
                "logo_url": staticfiles_storage.url(info.logo),
                "account": accounts.get(info.id),
            }
        )
    return rows


def _accounts() -> dict[str, BrokerAccount]:
    """The account per broker that the tab shows: the active one, else the newest."""
    accounts: dict[str, BrokerAccount] = {}
    for account in BrokerAccount.objects.order_by("is_active", "updated_at"):
        accounts[account.broker] = account
    return accounts


def broker_tab(request: HttpRequest) -> HttpResponse:
    accounts = _accounts()
    active = active_account()
    data = request.POST if request.method == "POST" else request.GET
    broker_id = data.get("broker") or (active.broker if active else "deribit")
    errors: dict[str, str] = {}
    result: dict[str, Any] | None = None
    try:
        selected = registry.get_broker_info(broker_id)
    except KeyError:
        errors["broker"] = f"Unknown broker {broker_id!r}: pick one of the list."
        selected = registry.get_broker_info("deribit")
        broker_id = selected.id
    account = accounts.get(broker_id)
    action = data.get("action", "") if request.method == "POST" else ""
    form = {
        "broker": broker_id,
        "api_key": data.get("api_key", "").strip() if action in ("test", "connect") else "",
        "testnet": (data.get("testnet") == "1")
        if request.method == "POST"
        else (account.testnet if account else selected.testnet),
        "auto_reconnect": (data.get("auto_reconnect") == "1")
        if request.method == "POST"
        else bool(account and account.auto_reconnect),
    }
    if not selected.testnet:
        form["testnet"] = False
    if action and not errors:
        result = _broker_action(action, selected, account, form, data, errors)
        accounts = _accounts()
        account = accounts.get(broker_id)
    context = {
        "brokers": _brokers(accounts),
        "selected": selected,
        "account": account,
        "form": form,
        "form_errors": errors,
        "result": result,
    }
    return render(request, "web/partials/settings_broker.html", context)


def _credentials(
    form: dict, data, account: BrokerAccount | None, errors: dict[str, str]
) -> tuple[str, str]:
    """Typed credentials, or the saved ones of the same broker when the fields are left empty."""
    api_key = form["api_key"]
    api_secret = data.get("api_secret", "").strip()
    if not api_key and account is not None:
        api_key = account.api_key
    if not api_secret and account is not None and api_key == account.api_key:
        api_secret = account.api_secret
    if not api_key:
        errors["api_key"] = "Enter the API key."
    if not api_secret:
        errors["api_secret"] = "Enter the API secret."
    return api_key, api_secret


def _broker_action(action, selected, account, form, data, errors) -> dict[str, Any] | None:
    try:
        if action == "disconnect":
            broker_account_disconnect(account=account)
            return {"ok": True, "message": f"{selected.name} disconnected."}
        if action == "reconnect":
            reconnected = broker_account_reconnect(account=account)
            return {"ok": True, "message": f"{selected.name} reconnected ({reconnected.state})."}
        api_key, api_secret = _credentials(form, data, account, errors)
        if errors:
            return None
        if action == "test":
            summary = broker_test_connection(
                broker_id=selected.id,
                api_key=api_key,
                api_secret=api_secret,
                testnet=form["testnet"],
            )
            return {
                "ok": True,
                "message": f"Connection OK. Balance {summary.balance} {summary.currency}, "
                f"equity {summary.equity} {summary.currency}.",
            }
        if action == "connect":
            saved = broker_account_connect(
                broker_id=selected.id,
                api_key=api_key,
                api_secret=api_secret,
                testnet=form["testnet"],
                auto_reconnect=form["auto_reconnect"],
            )
            if saved.auto_reconnect != form["auto_reconnect"]:
                broker_account_set_auto_reconnect(account=saved, enabled=form["auto_reconnect"])
            form["api_key"] = ""
            return {
                "ok": True,
                "message": f"{selected.name} connected and active. Key {saved.masked_key}.",
            }
    except BrokerServiceError as exc:
        return {"ok": False, "message": exc.message}
    errors["action"] = f"Unknown action {action!r}"
    return None


def risk_tab(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        fields, saved = preferences.risk_settings_save(request.POST)
    else:
        fields, saved = preferences.risk_settings_fields(), False
    return render(request, "web/partials/settings_risk.html", {"fields": fields, "saved": saved})


def notifications_tab(request: HttpRequest) -> HttpResponse:
    from . import notifications_form

    return notifications_form.tab(request)
