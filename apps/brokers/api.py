"""/api/v2/ broker endpoints: the registry, the active account, connect/test/reconnect/disconnect,
and the active broker's instruments. Thin: validate, call one service, shape the answer.

No response carries an API secret; the key appears only masked (last 4 characters).
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from django.templatetags.static import static
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.decorators import api_view
from rest_framework.request import Request
from rest_framework.response import Response

from apps.brokers import registry, services
from apps.brokers.base import AccountSummary, InstrumentSpec
from apps.brokers.models import BrokerAccount
from apps.brokers.selectors import active_account
from apps.monitoring.api_errors import ApiError


class CredentialsIn(serializers.Serializer):
    broker = serializers.ChoiceField(choices=registry.BROKER_CHOICES)
    api_key = serializers.CharField(max_length=256, trim_whitespace=True)
    api_secret = serializers.CharField(max_length=512, trim_whitespace=True, write_only=True)
    testnet = serializers.BooleanField(default=True)


class ConnectIn(CredentialsIn):
    label = serializers.CharField(max_length=100, required=False, allow_blank=True, default="")
    auto_reconnect = serializers.BooleanField(default=False)


class AutoReconnectIn(serializers.Serializer):
    enabled = serializers.BooleanField()


def _api_error(exc: services.BrokerServiceError) -> ApiError:
    return ApiError(exc.status, exc.code, exc.message)


def _decimal(value: Decimal | None) -> str | None:
    """Plain notation without the database's trailing zeros: 100000, not 100000.0000000000."""
    return None if value is None else format(value.normalize(), "f")


def broker_payload(info: registry.BrokerInfo) -> dict[str, Any]:
    return {
        "id": info.id,
        "name": info.name,
        "logo": static(info.logo),
        "testnet": info.testnet,
        "kinds": list(info.kinds),
        "linked_orders": info.linked_orders,
        "linked_orders_note": registry.LINKED_ORDER_NOTES.get(info.id, ""),
        "testnet_note": registry.TESTNET_NOTES.get(info.id, ""),
        "max_leverage": info.max_leverage,
        "adapter": "native" if info.adapter == registry.DERIBIT_ADAPTER else "ccxt",
        "ccxt_id": info.ccxt_id,
        "docs_url": info.docs_url,
        "example_pairs": list(info.example_pairs),
    }


def account_payload(account: BrokerAccount | None) -> dict[str, Any]:
    if account is None:
        return {
            "id": None,
            "paper": True,
            "broker": registry.PAPER_ID,
            "broker_name": registry.PAPER.name,
            "label": "",
            "testnet": True,
            "state": "connected",
            "since": None,
            "last_error": "",
            "last_connected_at": None,
            "masked_key": "",
            "auto_reconnect": False,
            "snapshot": None,
        }
    snapshot = account.snapshot
    if snapshot is not None:
        snapshot = {
            **snapshot,
            "equity": _decimal(snapshot["equity"]),  # type: ignore[arg-type]
            "available_funds": _decimal(snapshot["available_funds"]),  # type: ignore[arg-type]
        }
    return {
        "id": account.pk,
        "paper": False,
        "broker": account.broker,
        "broker_name": registry.get_broker_info(account.broker).name,
        "label": account.label,
        "testnet": account.testnet,
        "state": account.state,
        "since": account.state_since.isoformat(),
        "last_error": account.last_error,
        "last_connected_at": (
            account.last_connected_at.isoformat() if account.last_connected_at else None
        ),
        "masked_key": account.masked_key,
        "auto_reconnect": account.auto_reconnect,
        "snapshot": snapshot,
    }


def summary_payload(summary: AccountSummary) -> dict[str, Any]:
    return {
        "currency": summary.currency,
        "balance": str(summary.balance),
        "equity": str(summary.equity),
        "available_funds": str(summary.available_funds),
    }


def spec_payload(spec: InstrumentSpec) -> dict[str, Any]:
    return {
        "name": spec.name,
        "kind": spec.kind.value,
        "base_currency": spec.base_currency,
        "quote_currency": spec.quote_currency,
        "settlement_currency": spec.settlement_currency,
        "contract_size": str(spec.contract_size),
        "min_amount": str(spec.min_amount),
        "amount_step": str(spec.amount_step),
        "tick_size": str(spec.tick_size),
        "max_leverage": str(spec.max_leverage),
        "maker_fee": str(spec.maker_fee),
        "taker_fee": str(spec.taker_fee),
    }


_ACCOUNT = inline_serializer(
    "BrokerAccountState",
    {
        "id": serializers.IntegerField(allow_null=True),
        "paper": serializers.BooleanField(),
        "broker": serializers.CharField(),
        "broker_name": serializers.CharField(),
        "label": serializers.CharField(),
        "testnet": serializers.BooleanField(),
        "state": serializers.CharField(),
        "since": serializers.DateTimeField(allow_null=True),
        "last_error": serializers.CharField(),
        "last_connected_at": serializers.DateTimeField(allow_null=True),
        "masked_key": serializers.CharField(),
        "auto_reconnect": serializers.BooleanField(),
        "snapshot": serializers.DictField(allow_null=True),
    },
)


@extend_schema(responses=serializers.ListSerializer(child=serializers.DictField()))
@api_view(["GET"])
def brokers(request: Request) -> Response:
    """The 15 brokers of the registry, in order."""
    return Response([broker_payload(info) for info in registry.BROKERS])


@extend_schema(responses=_ACCOUNT)
@api_view(["GET"])
def broker_active(request: Request) -> Response:
    """The active account (or paper when none): state, since, last error, masked key."""
    return Response(account_payload(active_account()))


@extend_schema(request=ConnectIn, responses=_ACCOUNT)
@api_view(["POST"])
def broker_connect(request: Request) -> Response:
    """Test the credentials, then store them encrypted and make this the active account."""
    body = ConnectIn(data=request.data)
    body.is_valid(raise_exception=True)
    data = body.validated_data
    try:
        account = services.broker_account_connect(
            broker_id=data["broker"],
            api_key=data["api_key"],
            api_secret=data["api_secret"],
            testnet=data["testnet"],
            label=data["label"],
            auto_reconnect=data["auto_reconnect"],
        )
    except services.BrokerServiceError as exc:
        raise _api_error(exc) from None
    return Response(account_payload(account))


@extend_schema(
    request=CredentialsIn,
    responses=inline_serializer(
        "BrokerTestResult",
        {
            "broker": serializers.CharField(),
            "testnet": serializers.BooleanField(),
            "balance": serializers.DictField(),
        },
    ),
)
@api_view(["POST"])
def broker_test(request: Request) -> Response:
    """Check credentials and return the balance; nothing is stored or activated."""
    body = CredentialsIn(data=request.data)
    body.is_valid(raise_exception=True)
    data = body.validated_data
    try:
        summary = services.broker_test_connection(
            broker_id=data["broker"],
            api_key=data["api_key"],
            api_secret=data["api_secret"],
            testnet=data["testnet"],
        )
    except services.BrokerServiceError as exc:
        raise _api_error(exc) from None
    return Response(
        {"broker": data["broker"], "testnet": data["testnet"], "balance": summary_payload(summary)}
    )


@extend_schema(request=None, responses=_ACCOUNT)
@api_view(["POST"])
def broker_reconnect(request: Request) -> Response:
    """Manual reconnect of the active account (tests its stored credentials again)."""
    try:
        account = services.broker_account_reconnect()
    except services.BrokerServiceError as exc:
        raise _api_error(exc) from None
    return Response(account_payload(account))


@extend_schema(request=None, responses=_ACCOUNT)
@api_view(["POST"])
def broker_disconnect(request: Request) -> Response:
    """Disconnect the active account (refused while a run is active or a position is open)."""
    try:
        account = services.broker_account_disconnect()
    except services.BrokerServiceError as exc:
        raise _api_error(exc) from None
    return Response(account_payload(account))


@extend_schema(request=AutoReconnectIn, responses=_ACCOUNT)
@api_view(["POST"])
def broker_auto_reconnect(request: Request) -> Response:
    """Turn auto-reconnect of the active account on or off (off by default)."""
    body = AutoReconnectIn(data=request.data)
    body.is_valid(raise_exception=True)
    account = active_account()
    if account is None:
        raise _api_error(services.NoActiveAccount())
    account = services.broker_account_set_auto_reconnect(
        account=account, enabled=body.validated_data["enabled"]
    )
    return Response(account_payload(account))


@extend_schema(
    responses=inline_serializer(
        "Instruments",
        {
            "source": serializers.CharField(),
            "broker": serializers.CharField(),
            "read_at": serializers.DateTimeField(),
            "instruments": serializers.ListField(child=serializers.DictField()),
        },
    )
)
@api_view(["GET"])
def instruments(request: Request) -> Response:
    """The active broker's instruments (the simulator's when no broker is connected)."""
    try:
        read = services.instrument_specs_read(refresh=request.query_params.get("refresh") == "1")
    except services.BrokerServiceError as exc:
        raise _api_error(exc) from None
    account = active_account()
    broker_id = account.broker if read.source != "simulator" and account else registry.PAPER_ID
    return Response(
        {
            "source": read.source,
            "broker": broker_id,
            "read_at": datetime.fromtimestamp(read.read_at, tz=UTC).isoformat(),
            "instruments": [spec_payload(spec) for spec in read.specs],
        }
    )
