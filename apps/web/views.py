"""The trader's pages. Views translate the form and call one service; they render HTML partials
for htmx and keep what the trader typed when something is refused."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from apps.brokers.services import instrument_specs
from apps.monitoring import chart
from apps.strategies import registry
from apps.strategies.base import ParamError
from apps.strategies.services import (
    RunConflict,
    RunInputError,
    run_restart,
    run_resume,
    run_start,
    run_stop,
)

from . import preferences
from .state import page_state, recent_events


def _strategies() -> list[dict[str, Any]]:
    return registry.list_strategies()


def _instruments() -> list[Any]:
    return instrument_specs()


def _param_fields(strategy_id: str, values: dict[str, Any], errors: dict[str, str]) -> list[dict]:
    try:
        described = registry.strategy_class(strategy_id).describe()
    except registry.UnknownStrategy:
        return []
    fields = []
    for spec in described["params"]:
        name = spec["name"]
        fields.append(
            {
                **spec,
                "label": name.replace("_", " ").capitalize(),
                "value": values.get(name, spec["default"]),
                "error": errors.get(name) or errors.get(f"param_{name}"),
                "affects_preview": name in ("stop_loss_pct",),
            }
        )
    return fields


def _strategy_context(form: dict[str, Any], errors: dict[str, str]) -> dict[str, Any]:
    strategies = _strategies()
    selected = next((s for s in strategies if s["id"] == form["strategy"]), strategies[0])
    return {
        "strategies": strategies,
        "selected_strategy": selected,
        "instruments": _instruments(),
        "params": _param_fields(selected["id"], form.get("params", {}), errors),
        "form": form,
        "form_errors": errors,
    }


@require_GET
def dashboard(request: HttpRequest) -> HttpResponse:
    state = page_state()
    form = preferences.strategy_form_initial(request.user, state.run)
    context = {
        "page": "trading",
        "state": state,
        "events": recent_events(),
        "chart_instrument": state.chart_instrument,
        **_strategy_context(form, {}),
    }
    return render(request, "web/dashboard.html", context)


@require_GET
def strategy_params(request: HttpRequest) -> HttpResponse:
    strategy_id = request.GET.get("strategy", "")
    selected = next((s for s in _strategies() if s["id"] == strategy_id), None)
    context = {"params": _param_fields(strategy_id, {}, {}), "selected_strategy": selected}
    return render(request, "web/partials/strategy_params.html", context)


def _read_params(request: HttpRequest, strategy_id: str) -> dict[str, Any]:
    """Form fields ``param_<name>`` as the strategy's types; bad numbers stay strings so the
    strategy's own validation names the field."""
    try:
        schema = {s["name"]: s for s in registry.strategy_class(strategy_id).describe()["params"]}
    except registry.UnknownStrategy:
        return {}
    params: dict[str, Any] = {}
    for name, spec in schema.items():
        values = request.POST.getlist(f"param_{name}")
        if not values:
            continue
        raw = values[-1]
        if spec["type"] == "bool":
            params[name] = raw == "true"
        elif spec["type"] in ("int", "float"):
            try:
                number = Decimal(raw)
                params[name] = (
                    int(number)
                    if spec["type"] == "int" and number == int(number)
                    else float(number)
                )
            except (InvalidOperation, ValueError):
                params[name] = raw
        else:
            params[name] = raw
    return params


@require_POST
def strategy_start(request: HttpRequest) -> HttpResponse:
    strategy_id = request.POST.get("strategy", "")
    form = {
        "strategy": strategy_id,
        "instrument": request.POST.get("instrument", ""),
        "risk_mode": request.POST.get("risk_mode", "percent"),
        "risk_value": request.POST.get("risk_value", ""),
        "max_open_trades": request.POST.get("max_open_trades", "1"),
        "params": _read_params(request, strategy_id),
    }
    errors: dict[str, str] = {}
    try:
        # One transaction: a refused start (bad parameter, a run already active) must not
        # change the risk that a running loop reads for its next trade.
        with transaction.atomic():
            preferences.risk_from_form(form)  # the run reads it fresh for every trade
            preferences.remember(request.user, form)
            run_start(
                strategy=strategy_id,
                params=form["params"],
                instrument=form["instrument"],
                user=request.user,
            )
    except preferences.FormError as exc:
        errors = exc.errors
    except ParamError as exc:
        errors = {exc.field: exc.message}
    except registry.UnknownStrategy as exc:
        errors = {"strategy": str(exc)}
    except RunInputError as exc:
        errors = {exc.field: exc.message}
    except RunConflict as exc:
        errors = {"form": exc.message}
    context = {"state": page_state(), **_strategy_context(form, errors)}
    response = render(request, "web/partials/strategy_form.html", context)
    if not errors:
        # The run controls and status change too: send them out of band with the form.
        response.content += _oob(request, "web/partials/run_controls.html", context)
    return response


def _oob(request: HttpRequest, template: str, context: dict[str, Any]) -> bytes:
    from django.template.loader import render_to_string

    html = render_to_string(template, context, request=request)
    return html.replace(' id="', ' hx-swap-oob="true" id="', 1).encode()


def _controls(request: HttpRequest, error: str = "") -> HttpResponse:
    state = page_state()
    response = render(
        request, "web/partials/run_controls.html", {"state": state, "action_error": error}
    )
    form = preferences.strategy_form_initial(request.user, state.run)
    response.content += _oob(
        request, "web/partials/strategy_form.html", {"state": state, **_strategy_context(form, {})}
    )
    return response


@require_POST
def strategy_stop(request: HttpRequest) -> HttpResponse:
    try:
        run_stop(user=request.user)
    except RunConflict as exc:
        return _controls(request, exc.message)
    return _controls(request)


@require_POST
def strategy_restart(request: HttpRequest) -> HttpResponse:
    """Restart after ERROR, or resume after PAUSED: both need the trader's hand."""
    state = page_state()
    try:
        if state.run is not None and state.run.state == "PAUSED":
            run_resume(user=request.user)
        else:
            run_restart(user=request.user)
    except RunConflict as exc:
        return _controls(request, exc.message)
    return _controls(request)


@require_POST
def risk_preview(request: HttpRequest) -> HttpResponse:
    preview = preferences.preview_from_form(request.POST)
    return render(request, "web/partials/risk_preview.html", {"preview": preview})


@require_GET
def chart_data(request: HttpRequest) -> JsonResponse:
    instrument = request.GET.get("instrument", "")
    return JsonResponse({"instrument": instrument, "candles": chart.candles(instrument)})


@require_http_methods(["GET", "POST"])
def settings_broker(request: HttpRequest) -> HttpResponse:
    from . import settings_forms

    return settings_forms.broker_tab(request)


@require_http_methods(["GET", "POST"])
def settings_risk(request: HttpRequest) -> HttpResponse:
    from . import settings_forms

    return settings_forms.risk_tab(request)


@require_http_methods(["GET", "POST"])
def settings_notifications(request: HttpRequest) -> HttpResponse:
    from . import settings_forms

    return settings_forms.notifications_tab(request)


@require_POST
def kill_switch(request: HttpRequest) -> HttpResponse:
    """Stop the run, cancel every order that protects no position, optionally close it."""
    from apps.orders.manual import ActionFailed, kill_switch_execute

    close = request.POST.get("close_position") == "1"
    try:
        report = kill_switch_execute(user=request.user, close_position=close)
    except ActionFailed as exc:
        return render(
            request, "web/partials/action_result.html", {"ok": False, "message": exc.message}
        )
    return render(request, "web/partials/action_result.html", {"ok": True, "message": report})


@require_POST
def position_close(request: HttpRequest) -> HttpResponse:
    from apps.orders.manual import ActionFailed, position_close_execute

    try:
        report = position_close_execute(user=request.user)
    except ActionFailed as exc:
        return render(
            request, "web/partials/action_result.html", {"ok": False, "message": exc.message}
        )
    return render(request, "web/partials/action_result.html", {"ok": True, "message": report})


@require_POST
def broker_reconnect(request: HttpRequest) -> HttpResponse:
    """Manual reconnect from the header; the run stays PAUSED until the trader resumes it."""
    from apps.brokers.services import BrokerServiceError, broker_account_reconnect

    error = ""
    try:
        broker_account_reconnect()
    except BrokerServiceError as exc:
        error = exc.message
    return render(
        request, "web/partials/header_status.html", {"state": page_state(), "header_error": error}
    )
