from __future__ import annotations

import io

import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command
from django.db import connection

from apps.brokers import crypto
from apps.brokers.models import BrokerAccount

OLD_KEY = Fernet.generate_key().decode()
NEW_KEY = Fernet.generate_key().decode()
API_KEY = "AbCdEfGh-key-1234"
API_SECRET = "s3cr3t-value-that-must-never-leak-9876"


def _account() -> BrokerAccount:
    account = BrokerAccount(broker="deribit", testnet=True)
    account.set_credentials(api_key=API_KEY, api_secret=API_SECRET)
    account.save()
    return account


def _raw_columns(account_id: int) -> tuple[str, str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT api_key_encrypted, api_secret_encrypted FROM brokers_brokeraccount WHERE id = %s",
            [account_id],
        )
        return cursor.fetchone()


def test_encrypt_decrypt_round_trip_and_ciphertext_differs(settings):
    settings.CREDENTIALS_KEYS = [OLD_KEY]
    token = crypto.encrypt(API_SECRET)
    assert API_SECRET not in token
    assert crypto.decrypt(token) == API_SECRET


def test_decrypt_with_a_foreign_key_raises_a_clear_error(settings):
    settings.CREDENTIALS_KEYS = [OLD_KEY]
    token = crypto.encrypt(API_SECRET)
    settings.CREDENTIALS_KEYS = [NEW_KEY]
    with pytest.raises(crypto.CredentialsUnreadable) as excinfo:
        crypto.decrypt(token)
    assert "rotate_credentials_key" in str(excinfo.value)
    assert API_SECRET not in str(excinfo.value)


def test_mask_shows_only_the_last_four():
    assert crypto.mask("abcdefgh") == "****efgh"
    assert crypto.mask("abc") == "****"


@pytest.mark.django_db
def test_credentials_in_the_database_are_ciphertext(settings):
    settings.CREDENTIALS_KEYS = [OLD_KEY]
    account = _account()
    key_column, secret_column = _raw_columns(account.pk)
    assert API_KEY not in key_column and API_SECRET not in secret_column
    assert Fernet(OLD_KEY).decrypt(secret_column.encode()).decode() == API_SECRET
    fresh = BrokerAccount.objects.get(pk=account.pk)
    assert (fresh.api_key, fresh.api_secret) == (API_KEY, API_SECRET)


@pytest.mark.django_db
def test_rotation_keeps_credentials_readable_then_the_old_key_can_go(settings):
    settings.CREDENTIALS_KEYS = [OLD_KEY]
    account = _account()
    before = _raw_columns(account.pk)

    # new key first, old key second: old ciphertexts are readable, new ones use the new key
    settings.CREDENTIALS_KEYS = [NEW_KEY, OLD_KEY]
    assert BrokerAccount.objects.get(pk=account.pk).api_secret == API_SECRET
    out = io.StringIO()
    call_command("rotate_credentials_key", stdout=out)
    assert "1 broker account" in out.getvalue()
    after = _raw_columns(account.pk)
    assert after != before
    assert BrokerAccount.objects.get(pk=account.pk).api_secret == API_SECRET

    # the new key alone reads everything; the old key alone reads nothing any more
    settings.CREDENTIALS_KEYS = [NEW_KEY]
    fresh = BrokerAccount.objects.get(pk=account.pk)
    assert (fresh.api_key, fresh.api_secret) == (API_KEY, API_SECRET)
    settings.CREDENTIALS_KEYS = [OLD_KEY]
    with pytest.raises(crypto.CredentialsUnreadable):
        BrokerAccount.objects.get(pk=account.pk).api_secret


@pytest.mark.django_db
def test_rotation_without_the_old_key_fails_loudly_and_changes_nothing(settings):
    from django.core.management.base import CommandError

    settings.CREDENTIALS_KEYS = [OLD_KEY]
    account = _account()
    before = _raw_columns(account.pk)
    settings.CREDENTIALS_KEYS = [NEW_KEY]
    with pytest.raises(CommandError):
        call_command("rotate_credentials_key")
    assert _raw_columns(account.pk) == before
