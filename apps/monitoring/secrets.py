"""Encryption of the stored Telegram bot token.

Uses ``apps.brokers.crypto`` (the project's credential encryption) when it offers
``encrypt``/``decrypt``; otherwise a MultiFernet over ``settings.CREDENTIALS_KEYS`` (the first key
encrypts, every key decrypts, so keys rotate the same way as broker credentials).
"""

from __future__ import annotations

from cryptography.fernet import Fernet, MultiFernet
from django.conf import settings


def _brokers_crypto():
    try:
        from apps.brokers import crypto  # type: ignore[attr-defined]
    except ImportError:
        return None
    if callable(getattr(crypto, "encrypt", None)) and callable(getattr(crypto, "decrypt", None)):
        return crypto
    return None


def _fernet() -> MultiFernet:
    return MultiFernet([Fernet(key) for key in settings.CREDENTIALS_KEYS])


def encrypt(plain: str) -> str:
    crypto = _brokers_crypto()
    if crypto is not None:
        return crypto.encrypt(plain)
    return _fernet().encrypt(plain.encode()).decode()


def decrypt(token: str) -> str:
    crypto = _brokers_crypto()
    if crypto is not None:
        return crypto.decrypt(token)
    return _fernet().decrypt(token.encode()).decode()


def rotate(token: str) -> str:
    """Re-encrypt with the first (newest) key."""
    return encrypt(decrypt(token))


def notification_secrets_rotate() -> int:
    """Re-encrypt the stored Telegram bot token with the newest key; returns 1 if there was one."""
    from django.db import transaction

    from .models import NotificationSettings

    with transaction.atomic():
        config = NotificationSettings.objects.select_for_update().filter(pk=1).first()
        if config is None or not config.telegram_bot_token_encrypted:
            return 0
        config.telegram_bot_token_encrypted = rotate(config.telegram_bot_token_encrypted)
        config.save(update_fields=["telegram_bot_token_encrypted"])
    return 1
