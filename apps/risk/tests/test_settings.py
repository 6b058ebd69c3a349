"""Risk settings: stored once, validated, read fresh for every trade, logged and snapshotted."""

from __future__ import annotations

import json
import logging
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from apps.brokers.base import Side
from apps.brokers.simulator.instruments import DEFAULT_SPECS
from apps.monitoring.models import Event
from apps.risk.models import RiskSettings
from apps.risk.selectors import protection_limits
from apps.risk.services import (
    risk_settings_for_trade,
    risk_settings_get,
    risk_settings_snapshot,
    risk_settings_update,
    risk_size_trade,
)

pytestmark = pytest.mark.django_db
D = Decimal
BTC = DEFAULT_SPECS["BTC-PERPETUAL"]


def test_defaults_on_first_read():
    settings = risk_settings_get()
    assert (settings.mode, settings.value, settings.max_open_trades) == ("percent", D("1"), 1)
    assert settings.include_fees is False
    assert settings.cooldown_minutes == 0 and settings.daily_loss_limit_pct is None
    assert RiskSettings.objects.count() == 1
    assert risk_settings_get().pk == settings.pk


def test_there_is_only_ever_one_row():
    risk_settings_get()
    with pytest.raises(IntegrityError), transaction.atomic():
        RiskSettings.objects.create(id=2)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"value": D("100.5")}, "value"),  # percent above 100
        ({"value": D("0")}, "value"),
        ({"value": D("-1")}, "value"),
        ({"mode": "fixed", "value": D("2000000")}, "value"),
        ({"mode": "kelly"}, "mode"),
        ({"leverage_cap": D("0")}, "leverage_cap"),
        ({"leverage_cap": D("500")}, "leverage_cap"),
        ({"max_open_trades": 0}, "max_open_trades"),
        ({"daily_loss_limit_pct": D("150")}, "daily_loss_limit_pct"),
        ({"max_drawdown_pct": D("0")}, "max_drawdown_pct"),
        ({"cooldown_minutes": 100_000}, "cooldown_minutes"),
    ],
)
def test_bad_values_are_refused_per_field_and_not_stored(changes, field):
    risk_settings_get()
    with pytest.raises(ValidationError) as info:
        risk_settings_update(**changes)
    assert field in info.value.message_dict
    assert RiskSettings.objects.get().value == D("1")


def test_fixed_mode_allows_values_above_100():
    assert risk_settings_update(mode="fixed", value=D("250")).value == D("250")


def test_an_update_is_recorded_as_an_event():
    risk_settings_update(value=D("5"))
    event = Event.objects.get(kind="risk.settings_changed")
    assert "value 1 → 5" in event.message


def test_every_trade_reads_the_settings_fresh_and_logs_them(caplog):
    caplog.set_level(logging.INFO, logger="apps.risk")
    risk_settings_update(value=D("5"))
    assert risk_settings_for_trade().value == D("5")
    # Changed behind the process's back (another process, the admin): the next trade sees it.
    RiskSettings.objects.update(mode="fixed", value=D("50"))
    sized = risk_size_trade(
        spec=BTC, side=Side.BUY, entry=D("50000"), stop=D("49000"), equity=D("1")
    )
    lines = [r.getMessage() for r in caplog.records if r.name == "apps.risk"]
    assert "Using risk settings: mode=percent value=5" in lines
    assert "Using risk settings: mode=fixed value=50" in lines
    # $50 at 49 000 with a 1000 USD stop on 50 000: A = 50·50 000/1000 = 2500 USD.
    assert sized.result.amount == D("2500")
    assert sized.settings["mode"] == "fixed" and sized.settings["value"] == "50"


def test_snapshot_is_json_and_names_every_setting():
    risk_settings_update(daily_loss_limit_pct=D("3"), cooldown_minutes=15, include_fees=True)
    snapshot = risk_settings_snapshot()
    assert json.loads(json.dumps(snapshot)) == snapshot
    assert snapshot == {
        "mode": "percent",
        "value": "1",
        "leverage_cap": "10",
        "max_open_trades": 1,
        "include_fees": True,
        "cooldown_minutes": 15,
        "daily_loss_limit_pct": "3",
        "max_drawdown_pct": None,
    }
    limits = protection_limits()
    assert limits.cooldown_minutes == 15 and limits.daily_loss_limit_pct == D("3")


def test_admin_lists_and_edits_the_one_row_but_cannot_add_or_delete_it(client, user):
    user.is_superuser = True
    user.save(update_fields=["is_superuser"])
    client.force_login(user)
    auth_client = client
    settings = risk_settings_get()
    listing = auth_client.get("/admin/risk/risksettings/")
    assert listing.status_code == 200
    assert b"percent" in listing.content
    assert auth_client.get(f"/admin/risk/risksettings/{settings.pk}/change/").status_code == 200
    assert auth_client.get("/admin/risk/risksettings/add/").status_code == 403
    assert auth_client.get(f"/admin/risk/risksettings/{settings.pk}/delete/").status_code == 403
    form = {
        "mode": "percent",
        "value": "150",
        "leverage_cap": "10",
        "max_open_trades": "1",
        "cooldown_minutes": "0",
        "daily_loss_limit_pct": "",
        "max_drawdown_pct": "",
    }
    refused = auth_client.post(f"/admin/risk/risksettings/{settings.pk}/change/", form)
    assert refused.status_code == 200  # the form again, with the error
    assert b"A percent risk must be at most 100." in refused.content
    assert RiskSettings.objects.get().value == D("1")
    form["value"] = "2.5"
    saved = auth_client.post(f"/admin/risk/risksettings/{settings.pk}/change/", form)
    assert saved.status_code == 302
    assert RiskSettings.objects.get().value == D("2.5")
    assert "value 1 → 2.5" in Event.objects.get(kind="risk.settings_changed").message
