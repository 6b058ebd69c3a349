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
