"""Native Deribit API v2: JSON-RPC over one WebSocket (client) and the Broker built on it."""

from apps.brokers.deribit.broker import DeribitBroker
from apps.brokers.deribit.client import MAINNET_URL, TESTNET_URL, DeribitClient

__all__ = ["MAINNET_URL", "TESTNET_URL", "DeribitBroker", "DeribitClient"]
