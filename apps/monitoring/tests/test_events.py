"""The audit log: saved, logged with context, pushed to open pages after commit, alerted on demand."""

from __future__ import annotations

import json
import logging
from decimal import Decimal

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

from apps.monitoring import live, notify
from apps.monitoring.events import event_record
from apps.monitoring.logging import JsonFormatter
from apps.monitoring.models import Event
from apps.monitoring.testing import configure_telegram


def _listen():
    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(live.GROUP, channel)
    return layer, channel


@pytest.mark.django_db
def test_event_is_saved_and_pushed_after_commit(django_capture_on_commit_callbacks):
    layer, channel = _listen()
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        event = event_record(
            kind="bracket_opened",
            message="Long 100 USD BTC-PERPETUAL",
            context={"entry": Decimal("65000.5")},
            run_id=7,
            bracket_id="tb-7-1",
        )
    assert len(callbacks) == 1
    row = Event.objects.get(pk=event.pk)
    assert (row.kind, row.level, row.run_id, row.bracket_id) == (
        "bracket_opened",
        "info",
        7,
        "tb-7-1",
    )
    assert row.context == {"entry": "65000.5"}
    message = async_to_sync(layer.receive)(channel)
    assert message["type"] == "live.html"
    assert 'hx-swap-oob="afterbegin:#events-list"' in message["html"]
    assert f'id="event-{event.pk}"' in message["html"]
    assert "Long 100 USD BTC-PERPETUAL" in message["html"]


@pytest.mark.django_db
def test_nothing_is_announced_for_a_rolled_back_event(django_capture_on_commit_callbacks):
    with (
        django_capture_on_commit_callbacks(execute=True) as callbacks,
        pytest.raises(RuntimeError),
        transaction.atomic(),
    ):
        event_record(kind="x", message="never happened")
        raise RuntimeError
    assert callbacks == []
    assert not Event.objects.filter(kind="x").exists()


@pytest.mark.django_db
def test_event_log_line_carries_run_bracket_and_context(caplog):
    with caplog.at_level(logging.INFO, logger="tradebaas.events"):
        event_record(
            kind="run_error",
            level="error",
            message="boom",
            run_id=3,
            bracket_id="b-1",
            context={"api_secret": "hunter2", "step": "place"},
        )
    line = json.loads(JsonFormatter().format(caplog.records[-1]))
    assert line["level"] == "error"
    assert line["run_id"] == 3 and line["bracket_id"] == "b-1"
    assert line["event_kind"] == "run_error"
    assert line["event_context"]["step"] == "place"
    assert "hunter2" not in json.dumps(line)


@pytest.mark.django_db
def test_unknown_level_is_refused():
    with pytest.raises(ValueError, match="level must be one of"):
        event_record(kind="x", message="y", level="loud")


@pytest.mark.django_db(transaction=True)
def test_alerting_event_is_sent_to_telegram(telegram, monkeypatch):
    configure_telegram(telegram)
    event_record(
        kind="run_error",
        level="error",
        message="Run 9 stopped: lost the feed",
        run_id=9,
        alert=True,
    )
    event_record(kind="bracket_opened", message="not alerted")
    assert notify.flush(10)
    assert telegram.texts() == [
        "🚨 [ERROR] Run 9 stopped: lost the feed (run 9)\n"
        "Action: manual restart required (dashboard, or /restart when remote start is on)."
    ]
