from __future__ import annotations

import pytest
from django.contrib.admin.sites import site
from django.db import IntegrityError, transaction

from apps.brokers.models import BrokerAccount

pytestmark = pytest.mark.django_db

API_KEY = "key-ABCD-wxyz"
API_SECRET = "very-secret-SECRET-0042"


def _account(*, active: bool = False, broker: str = "deribit") -> BrokerAccount:
    account = BrokerAccount(broker=broker, testnet=True, is_active=active)
    account.set_credentials(api_key=API_KEY, api_secret=API_SECRET)
    account.save()
    return account


def test_at_most_one_active_account_is_a_database_constraint():
    _account(active=True)
    _account(active=False, broker="bybit")
    with pytest.raises(IntegrityError), transaction.atomic():
        _account(active=True, broker="okx")
    # bypassing save() (a bulk UPDATE) hits the same constraint
    with pytest.raises(IntegrityError), transaction.atomic():
        BrokerAccount.objects.update(is_active=True)
    assert BrokerAccount.objects.filter(is_active=True).count() == 1


def test_defaults_auto_reconnect_off_and_disconnected():
    account = _account()
    assert account.auto_reconnect is False
    assert account.state == "disconnected"
    assert account.state_since is not None


def test_masked_key_and_str_show_only_the_last_four():
    account = _account()
    assert account.masked_key == "****wxyz"
    assert API_KEY not in str(account) and API_SECRET not in str(account)
    assert "wxyz" in str(account)


def test_admin_pages_never_show_secrets(admin_client):
    account = _account(active=True)
    for url in (
        "/admin/brokers/brokeraccount/",
        f"/admin/brokers/brokeraccount/{account.pk}/change/",
    ):
        response = admin_client.get(url)
        assert response.status_code == 200
        page = response.content.decode()
        assert API_SECRET not in page
        assert API_KEY not in page
        assert account.api_secret_encrypted not in page
        assert "****wxyz" in page
    assert site.is_registered(BrokerAccount)


def test_snapshot_is_none_until_written():
    account = _account()
    assert account.snapshot is None
