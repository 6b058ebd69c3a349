"""Risk API: the settings (GET/PUT /api/v2/risk-settings) and what the sizer would do with a trade
(POST /api/v2/risk/preview).

Numbers travel as decimal strings. A value that is not a number (or NaN, infinite, missing) is a
400 with the field; a trade the sizer refuses is a 422 whose code is the refusal's
(``STOP_WRONG_SIDE``, ``MIN_AMOUNT_EXCEEDS_RISK``, ..., and ``INVALID_INPUT`` for non-positive or
absurd numbers) with the field at fault in ``fields``.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.decorators import api_view
from rest_framework.request import Request
from rest_framework.response import Response

from apps.brokers.base import InstrumentSpec
from apps.monitoring.api_errors import ApiError
from apps.risk.models import RiskMode, RiskSettings, plain
from apps.risk.selectors import risk_settings_current, risk_settings_snapshot_of
from apps.risk.services import risk_settings_get, risk_settings_update
from apps.risk.sizing import SizingRefused, decimal_str, size_position


class RiskSettingsSerializer(serializers.ModelSerializer):
    class Meta:
        model = RiskSettings
        fields = (
            "mode",
            "value",
            "leverage_cap",
            "max_open_trades",
            "include_fees",
            "cooldown_minutes",
            "daily_loss_limit_pct",
            "max_drawdown_pct",
            "updated_at",
        )
        read_only_fields = ("updated_at",)

    def to_representation(self, instance: RiskSettings) -> dict[str, Any]:
        data = risk_settings_snapshot_of(instance)
        data["updated_at"] = instance.updated_at.isoformat() if instance.updated_at else None
        return data


@extend_schema(request=RiskSettingsSerializer, responses=RiskSettingsSerializer)
@api_view(["GET", "PUT", "PATCH"])
def risk_settings(request: Request) -> Response:
    """The risk settings. PUT and PATCH both change only the fields sent."""
    if request.method == "GET":
        return Response(RiskSettingsSerializer(risk_settings_get()).data)
    serializer = RiskSettingsSerializer(risk_settings_get(), data=request.data, partial=True)
    serializer.is_valid(raise_exception=True)
    try:
        settings = risk_settings_update(**serializer.validated_data)
    except DjangoValidationError as exc:
        raise serializers.ValidationError(exc.message_dict) from None
    return Response(RiskSettingsSerializer(settings).data)


def _number(**kwargs: Any) -> serializers.DecimalField:
    return serializers.DecimalField(max_digits=None, decimal_places=None, **kwargs)


class PreviewSerializer(serializers.Serializer):
    instrument = serializers.CharField(max_length=64)
    side = serializers.ChoiceField(choices=["buy", "sell"])
    entry = _number()
    stop = _number()
    mode = serializers.ChoiceField(choices=RiskMode.values, required=False)
    value = _number(required=False)
    equity = _number(required=False)
    available_funds = _number(required=False)
    leverage_cap = _number(required=False)
    include_fees = serializers.BooleanField(required=False)


class WarningSerializer(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()


class PreviewResultSerializer(serializers.Serializer):
    """The answer of a preview (documentation only: the view builds the dict)."""

    instrument = serializers.CharField()
    side = serializers.CharField()
    amount = serializers.CharField(help_text="USD for inverse instruments, base coin for linear")
    risk = serializers.CharField(help_text="Loss at the stop, settlement currency")
    risk_currency = serializers.CharField()
    risk_usd = serializers.CharField()
    target_risk = serializers.CharField()
    target_risk_usd = serializers.CharField()
    fees = serializers.CharField(help_text="Taker fees of entry and stop, settlement currency")
    include_fees = serializers.BooleanField()
    notional = serializers.CharField()
    notional_usd = serializers.CharField()
    leverage = serializers.CharField()
    required_margin = serializers.CharField()
    equity = serializers.CharField()
    equity_source = serializers.CharField(help_text="request or broker")
    mode = serializers.CharField()
    value = serializers.CharField()
    warnings = WarningSerializer(many=True)


def _instrument(name: str) -> InstrumentSpec:
    from apps.brokers.services import BrokerServiceError, instrument_spec

    try:
        return instrument_spec(name=name)
    except KeyError:
        raise ApiError(
            400,
            "INVALID_INPUT",
            f"Unknown instrument {name!r}.",
            fields={"instrument": [f"{name!r} is not listed by the active broker."]},
        ) from None
    except BrokerServiceError as exc:
        raise ApiError(exc.status, exc.code, exc.message) from None


def _equity(currency: str) -> Decimal:
    from apps.brokers.services import BrokerServiceError, active_broker_equity

    try:
        return active_broker_equity(currency=currency)
    except BrokerServiceError as exc:
        raise ApiError(exc.status, exc.code, exc.message) from None


@extend_schema(request=PreviewSerializer, responses=PreviewResultSerializer)
@api_view(["POST"])
def risk_preview(request: Request) -> Response:
    """What the sizer would do with this trade, with the saved settings filling what is not sent.

    Without ``equity``, the active broker's equity in the instrument's settlement currency is used
    (with no broker connected: the paper simulator's starting balance).
    """
    serializer = PreviewSerializer(data=request.data)
    serializer.is_valid(raise_exception=True)
    data = serializer.validated_data
    saved = risk_settings_current()
    spec = _instrument(data["instrument"])
    if "equity" in data:
        equity, equity_source = data["equity"], "request"
    else:
        equity, equity_source = _equity(spec.settlement_currency), "broker"
    mode = data.get("mode", saved.mode)
    value = data.get("value", saved.value)
    include_fees = data.get("include_fees", saved.include_fees)
    try:
        result = size_position(
            spec=spec,
            side=data["side"],
            entry=data["entry"],
            stop=data["stop"],
            equity=equity,
            available_funds=data.get("available_funds"),
            mode=mode,
            value=value,
            leverage_cap=data.get("leverage_cap", saved.leverage_cap),
            include_fees=include_fees,
        )
    except SizingRefused as refused:
        fields = {refused.field: [refused.message]} if refused.field else {}
        raise ApiError(422, refused.code.value, refused.message, fields=fields) from None
    return Response(
        {
            "instrument": result.instrument,
            "side": result.side.value,
            "amount": decimal_str(result.amount),
            "risk": decimal_str(result.risk),
            "risk_currency": result.risk_currency,
            "risk_usd": decimal_str(result.risk_usd),
            "target_risk": decimal_str(result.target_risk),
            "target_risk_usd": decimal_str(result.target_risk_usd),
            "fees": decimal_str(result.fees),
            "include_fees": result.include_fees,
            "notional": decimal_str(result.notional),
            "notional_usd": decimal_str(result.notional_usd),
            "leverage": decimal_str(result.leverage),
            "required_margin": decimal_str(result.required_margin),
            "equity": plain(Decimal(equity)),
            "equity_source": equity_source,
            "mode": str(mode),
            "value": plain(Decimal(value)),
            "warnings": [{"code": w.code, "message": w.message} for w in result.warnings],
        }
    )
