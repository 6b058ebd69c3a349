"""Deribit error codes mapped to the typed errors of ``apps.brokers.base``.

Every answer with an ``error`` member becomes one ``BrokerError`` subclass that keeps Deribit's
own code, message and data. The table follows Deribit's official error list (API v2.1.1).
"""

from __future__ import annotations

from typing import Any

from apps.brokers.base import (
    AuthenticationFailed,
    BrokerError,
    NotFound,
    OrderRejected,
    RetryableError,
)

# code -> (Deribit's name, the exception class a caller should see)
ERRORS: dict[int, tuple[str, type[BrokerError]]] = {
    10000: ("authorization_required", AuthenticationFailed),
    10001: ("error", BrokerError),
    10002: ("qty_too_low", OrderRejected),
    10003: ("order_overlap", OrderRejected),
    10004: ("order_not_found", NotFound),
    10005: ("price_too_low", OrderRejected),
    10006: ("price_too_low4idx", OrderRejected),
    10007: ("price_too_high", OrderRejected),
    10009: ("not_enough_funds", OrderRejected),
    10010: ("already_closed", OrderRejected),
    10011: ("price_not_allowed", OrderRejected),
    10012: ("book_closed", OrderRejected),
    10013: ("pme_max_total_open_orders", OrderRejected),
    10014: ("pme_max_future_open_orders", OrderRejected),
    10015: ("pme_max_option_open_orders", OrderRejected),
    10016: ("pme_max_future_open_orders_size", OrderRejected),
    10017: ("pme_max_option_open_orders_size", OrderRejected),
    10018: ("non_pme_max_future_position_size", OrderRejected),
    10019: ("locked_by_admin", OrderRejected),
    10020: ("invalid_or_unsupported_instrument", NotFound),
    10021: ("invalid_amount", OrderRejected),
    10022: ("invalid_quantity", OrderRejected),
    10023: ("invalid_price", OrderRejected),
    10024: ("invalid_max_show", OrderRejected),
    10025: ("invalid_order_id", NotFound),
    10026: ("price_precision_exceeded", OrderRejected),
    10027: ("non_integer_contract_amount", OrderRejected),
    10028: ("too_many_requests", RetryableError),
    10029: ("not_owner_of_order", OrderRejected),
    10030: ("must_be_websocket_request", BrokerError),
    10031: ("invalid_args_for_instrument", OrderRejected),
    10032: ("whole_cost_too_low", OrderRejected),
    10033: ("not_implemented", BrokerError),
    10034: ("trigger_price_too_high", OrderRejected),
    10035: ("trigger_price_too_low", OrderRejected),
    10036: ("invalid_max_show_amount", OrderRejected),
    10037: ("non_pme_total_short_options_positions_size", OrderRejected),
    10038: ("pme_max_risk_reducing_orders", OrderRejected),
    10039: ("not_enough_funds_in_currency", OrderRejected),
    10040: ("retry", RetryableError),
    10041: ("settlement_in_progress", RetryableError),
    10043: ("price_wrong_tick", OrderRejected),
    10044: ("trigger_price_wrong_tick", OrderRejected),
    10045: ("can_not_cancel_liquidation_order", OrderRejected),
    10046: ("can_not_edit_liquidation_order", OrderRejected),
    10047: ("matching_engine_queue_full", RetryableError),
    10048: ("not_on_this_server", BrokerError),
    10049: ("cancel_on_disconnect_failed", BrokerError),
    10066: ("too_many_concurrent_requests", RetryableError),
    10072: ("disabled_while_position_lock", OrderRejected),
    11008: ("already_filled", OrderRejected),
    11013: ("max_spot_open_orders", OrderRejected),
    11021: ("post_only_price_modification_not_possible", OrderRejected),
    11022: ("max_spot_order_quantity", OrderRejected),
    11029: ("invalid_arguments", OrderRejected),
    11030: ("other_reject", OrderRejected),
    11031: ("other_error", BrokerError),
    11035: ("no_more_triggers", OrderRejected),
    11036: ("invalid_trigger_price", OrderRejected),
    11037: ("outdated_instrument_for_IV_order", OrderRejected),
    11038: ("no_adv_for_futures", OrderRejected),
    11039: ("no_adv_postonly", OrderRejected),
    11041: ("not_adv_order", OrderRejected),
    11042: ("permission_denied", AuthenticationFailed),
    11043: ("bad_argument", OrderRejected),
    11044: ("not_open_order", OrderRejected),
    11045: ("invalid_event", BrokerError),
    11046: ("outdated_instrument", OrderRejected),
    11047: ("unsupported_arg_combination", OrderRejected),
    11048: ("wrong_max_show_for_option", OrderRejected),
    11049: ("bad_arguments", OrderRejected),
    11050: ("bad_request", BrokerError),
    11051: ("system_maintenance", RetryableError),
    11052: ("subscribe_error_unsubscribed", BrokerError),
    11053: ("transfer_not_found", NotFound),
    11054: ("post_only_reject", OrderRejected),
    11055: ("post_only_not_allowed", OrderRejected),
    11056: ("unauthenticated_public_requests_temporarily_disabled", RetryableError),
    11090: ("invalid_addr", BrokerError),
    11091: ("invalid_transfer_address", BrokerError),
    11092: ("address_already_exist", BrokerError),
    11093: ("max_addr_count_exceeded", BrokerError),
    11094: ("internal_server_error", RetryableError),
    11095: ("disabled_deposit_address_creation", BrokerError),
    11096: ("address_belongs_to_user", BrokerError),
    11097: ("no_deposit_address", BrokerError),
    11098: ("account_locked", AuthenticationFailed),
    12001: ("too_many_subaccounts", BrokerError),
    12002: ("wrong_subaccount_name", BrokerError),
    12998: ("login_over_limit", RetryableError),
    12999: ("registration_over_limit", RetryableError),
    13000: ("country_is_banned", AuthenticationFailed),
    13001: ("transfer_not_allowed", BrokerError),
    13004: ("invalid_credentials", AuthenticationFailed),
    13005: ("pwd_match_error", AuthenticationFailed),
    13006: ("security_error", AuthenticationFailed),
    13007: ("user_not_found", AuthenticationFailed),
    13008: ("request_failed", BrokerError),
    13009: ("unauthorized", AuthenticationFailed),
    13010: ("value_required", OrderRejected),
    13011: ("value_too_short", OrderRejected),
    13012: ("unavailable_in_subaccount", BrokerError),
    13013: ("invalid_phone_number", BrokerError),
    13014: ("cannot_send_sms", BrokerError),
    13015: ("invalid_sms_code", BrokerError),
    13016: ("invalid_input", OrderRejected),
    13018: ("invalid_content_type", BrokerError),
    13019: ("orderbook_closed", OrderRejected),
    13020: ("not_found", NotFound),
    13021: ("forbidden", AuthenticationFailed),
    13025: ("method_switched_off_by_admin", BrokerError),
    13028: ("temporarily_unavailable", RetryableError),
    13030: ("mmp_trigger", OrderRejected),
    13031: ("verification_required", AuthenticationFailed),
    13032: ("non_unique_order_label", OrderRejected),
    13034: ("no_more_security_keys_allowed", BrokerError),
    13035: ("active_combo_limit_reached", OrderRejected),
    13036: ("unavailable_for_combo_books", OrderRejected),
    13037: ("incomplete_KYC_data", AuthenticationFailed),
    13040: ("mmp_required", OrderRejected),
    13042: ("cod_not_enabled", BrokerError),
    13043: ("quotes_frozen", OrderRejected),
    13403: ("scope_exceeded", AuthenticationFailed),
    13503: ("unavailable", RetryableError),
    13666: ("request_cancelled_by_user", BrokerError),
    13668: ("security_key_authorization_error", AuthenticationFailed),
    13777: ("replaced", OrderRejected),
    13778: ("raw_subscriptions_not_available_for_unauthorized", AuthenticationFailed),
    13888: ("timed_out", RetryableError),
    13901: ("no_more_oto_orders", OrderRejected),
    -32000: ("missing params", OrderRejected),
    -32600: ("request entity too large", BrokerError),
    -32601: ("Method not found", BrokerError),
    -32602: ("Invalid params", OrderRejected),
    -32700: ("Parse error", BrokerError),
}

# Errors after which a cancel found the order already gone (filled, cancelled, closed).
ALREADY_CLOSED_CODES = frozenset({10010, 11008, 11044})


def error_class(code: int | None, data: Any = None) -> type[BrokerError]:
    """The exception class for a Deribit error code (unknown codes are plain BrokerError)."""
    if code is None:
        return BrokerError
    # -32602 is Deribit's generic validation error; "not found" reasons are lookups, not rejections.
    if code == -32602 and isinstance(data, dict) and "not found" in str(data.get("reason", "")):
        return NotFound
    entry = ERRORS.get(code)
    return entry[1] if entry else BrokerError


def error_from_rpc(error: Any, *, method: str = "", redact: tuple[str, ...] = ()) -> BrokerError:
    """Turn a JSON-RPC ``error`` member into a typed exception.

    ``redact`` lists secrets (client secret, tokens) that must not survive into the message or
    data should a server ever echo them back.
    """
    if not isinstance(error, dict):
        return BrokerError(_scrub(f"malformed error {error!r}", redact), data={"method": method})
    raw_code = error.get("code")
    code = raw_code if isinstance(raw_code, int) else None
    message = str(error.get("message") or (ERRORS.get(code, ("error",))[0] if code else "error"))
    data = _scrub(error.get("data"), redact)
    message = _scrub(message, redact)
    cls = error_class(code, data)
    exc = cls(message, code=code if code is not None else raw_code, data=data)
    exc.method = method  # type: ignore[attr-defined]
    return exc


def _scrub(value: Any, secrets: tuple[str, ...]) -> Any:
    if not secrets:
        return value
    if isinstance(value, str):
        for secret in secrets:
            if secret:
                value = value.replace(secret, "***")
        return value
    if isinstance(value, dict):
        return {k: _scrub(v, secrets) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(v, secrets) for v in value]
    return value
