"""The brokers Tradebaas can trade with: the 15 of the original system, plus the built-in paper broker.

Metadata only (no Django, no network). ``linked_orders`` says whether OUR adapter places a bracket
as one exchange-linked request; only Deribit does (OTOCO). For the others the bracket service
emulates the set (entry, then reduce-only stop and take-profit, verify, roll back); ``linked_note``
says what the exchange itself offers through ccxt, so a later adapter knows where to look.

``testnet`` is what the adapter can actually reach: Deribit's own testnet, or ccxt's sandbox URL
for that exchange (``exchange.urls["test"]`` in the pinned ccxt). Where the original system
claimed a testnet that ccxt does not wire up, ``testnet_note`` says so.
"""

from __future__ import annotations

from apps.brokers.base import BrokerInfo

DERIBIT_ADAPTER = "apps.brokers.deribit.DeribitBroker"
CCXT_ADAPTER = "apps.brokers.ccxt_broker.CcxtBroker"
PAPER_ADAPTER = "apps.brokers.paper.PaperBroker"
PAPER_ID = "paper"

_EMULATED = "Emulated by the bracket service (entry, then reduce-only stop and take-profit)."


def _logo(broker_id: str) -> str:
    return f"img/brokers/{broker_id}.svg"


def _info(
    broker_id: str,
    name: str,
    *,
    testnet: bool,
    kinds: tuple[str, ...],
    max_leverage: int,
    ccxt_id: str | None,
    docs_url: str,
    pairs: tuple[str, ...],
    linked_orders: bool = False,
    adapter: str = CCXT_ADAPTER,
) -> BrokerInfo:
    return BrokerInfo(
        id=broker_id,
        name=name,
        logo=_logo(broker_id),
        testnet=testnet,
        kinds=kinds,
        linked_orders=linked_orders,
        max_leverage=max_leverage,
        adapter=adapter,
        ccxt_id=ccxt_id,
        docs_url=docs_url,
        example_pairs=pairs,
    )


_ALL = ("spot", "futures", "perpetuals")

BROKERS: tuple[BrokerInfo, ...] = (
    _info(
        "deribit",
        "Deribit",
        testnet=True,
        kinds=("futures", "perpetuals", "options"),
        max_leverage=50,
        ccxt_id="deribit",
        docs_url="https://docs.deribit.com/",
        pairs=("BTC_USDC-PERPETUAL", "ETH_USDC-PERPETUAL", "BTC-PERPETUAL", "ETH-PERPETUAL"),
        linked_orders=True,
        adapter=DERIBIT_ADAPTER,
    ),
    _info(
        "binance",
        "Binance",
        testnet=True,
        kinds=_ALL,
        max_leverage=125,
        ccxt_id="binanceusdm",
        docs_url="https://developers.binance.com/docs/derivatives/usds-margined-futures",
        pairs=("BTC/USDT:USDT", "ETH/USDT:USDT"),
    ),
    _info(
        "bybit",
        "Bybit",
        testnet=True,
        kinds=_ALL,
        max_leverage=100,
        ccxt_id="bybit",
        docs_url="https://bybit-exchange.github.io/docs/v5/intro",
        pairs=("BTC/USDT:USDT", "ETH/USDT:USDT"),
    ),
    _info(
        "okx",
        "OKX",
        testnet=True,
        kinds=(*_ALL, "options"),
        max_leverage=125,
        ccxt_id="okx",
        docs_url="https://www.okx.com/docs-v5/en/",
        pairs=("BTC/USDT:USDT", "ETH/USDT:USDT"),
    ),
    _info(
        "kraken",
        "Kraken",
        testnet=True,
        kinds=_ALL,
        max_leverage=5,
        ccxt_id="krakenfutures",
        docs_url="https://docs.kraken.com/api/docs/futures-api/trading/",
        pairs=("BTC/USD:USD", "ETH/USD:USD"),
    ),
    _info(
        "bitget",
        "Bitget",
        testnet=False,
        kinds=_ALL,
        max_leverage=125,
        ccxt_id="bitget",
        docs_url="https://www.bitget.com/api-doc/contract/intro",
        pairs=("BTC/USDT:USDT", "ETH/USDT:USDT"),
    ),
    _info(
        "kucoin",
        "KuCoin",
        testnet=False,
        kinds=_ALL,
        max_leverage=100,
        ccxt_id="kucoinfutures",
        docs_url="https://www.kucoin.com/docs-new/",
        pairs=("BTC/USDT:USDT", "ETH/USDT:USDT"),
    ),
    _info(
        "mexc",
        "MEXC",
        testnet=False,
        kinds=_ALL,
        max_leverage=200,
        ccxt_id="mexc",
        docs_url="https://mexcdevelop.github.io/apidocs/contract_v1_en/",
        pairs=("BTC/USDT:USDT", "ETH/USDT:USDT"),
    ),
    _info(
        "gateio",
        "Gate.io",
        testnet=True,
        kinds=_ALL,
        max_leverage=100,
        ccxt_id="gate",
        docs_url="https://www.gate.io/docs/developers/apiv4/",
        pairs=("BTC/USDT:USDT", "ETH/USDT:USDT"),
    ),
    _info(
        "bitmex",
        "BitMEX",
        testnet=True,
        kinds=("futures", "perpetuals"),
        max_leverage=100,
        ccxt_id="bitmex",
        docs_url="https://www.bitmex.com/app/apiOverview",
        pairs=("BTC/USD:BTC", "ETH/USD:BTC"),
    ),
    _info(
        "huobi",
        "Huobi",
        testnet=False,
        kinds=_ALL,
        max_leverage=125,
        ccxt_id="htx",
        docs_url="https://www.htx.com/en-us/opend/newApiPages/",
        pairs=("BTC/USDT:USDT", "ETH/USDT:USDT"),
    ),
    _info(
        "phemex",
        "Phemex",
        testnet=True,
        kinds=_ALL,
        max_leverage=100,
        ccxt_id="phemex",
        docs_url="https://phemex-docs.github.io/",
        pairs=("BTC/USDT:USDT", "BTC/USD:BTC"),
    ),
    _info(
        "coinbase",
        "Coinbase Advanced",
        testnet=False,
        kinds=("spot",),
        max_leverage=5,
        ccxt_id="coinbase",
        docs_url="https://docs.cdp.coinbase.com/advanced-trade/docs/welcome",
        pairs=("BTC/USD", "ETH/USD"),
    ),
    _info(
        "bitstamp",
        "Bitstamp",
        testnet=False,
        kinds=("spot",),
        max_leverage=3,
        ccxt_id="bitstamp",
        docs_url="https://www.bitstamp.net/api/",
        pairs=("BTC/USD", "ETH/USD"),
    ),
    _info(
        "bitfinex",
        "Bitfinex",
        testnet=False,
        kinds=("spot",),
        max_leverage=10,
        ccxt_id="bitfinex",
        docs_url="https://docs.bitfinex.com/docs",
        pairs=("BTC/USD", "ETH/USD"),
    ),
)

# What each exchange itself offers for stop/take-profit, read from the pinned ccxt's ``has`` map
# and the exchanges' docs. Our ccxt adapter uses none of it: the bracket service emulates.
LINKED_ORDER_NOTES: dict[str, str] = {
    "deribit": "Native OTOCO: one private/buy or private/sell with otoco_config (used).",
    "binance": "No attached TP/SL on the entry; separate STOP_MARKET / TAKE_PROFIT_MARKET "
    "orders with reduceOnly or closePosition. " + _EMULATED,
    "bybit": "Attached take-profit/stop-loss on the entry (ccxt "
    "createOrderWithTakeProfitAndStopLoss); not used. " + _EMULATED,
    "okx": "Attached algo orders on the entry (ccxt createOrderWithTakeProfitAndStopLoss); "
    "not used. " + _EMULATED,
    "kraken": "Separate stop and take_profit trigger orders, reduce-only; no linked set. "
    + _EMULATED,
    "bitget": "Preset stop-loss/take-profit on the entry (ccxt "
    "createOrderWithTakeProfitAndStopLoss); not used. " + _EMULATED,
    "kucoin": "Attached stop-loss/take-profit on the entry (ccxt "
    "createOrderWithTakeProfitAndStopLoss); not used. " + _EMULATED,
    "mexc": "Trigger orders only; no linked set in ccxt. " + _EMULATED,
    "gateio": "Price-triggered orders, separate from the entry. " + _EMULATED,
    "bitmex": "BitMEX removed contingent (OCO/OTO) orders; separate stops only. " + _EMULATED,
    "huobi": "Separate trigger / TP-SL orders. " + _EMULATED,
    "phemex": "No stop or trigger orders in ccxt's unified API for phemex. " + _EMULATED,
    "coinbase": "Spot only; attached bracket orders are not exposed by ccxt. " + _EMULATED,
    "bitstamp": "Spot only, no trigger orders in ccxt: a stop cannot be placed there.",
    "bitfinex": "The exchange has an OCO flag for spot; ccxt does not unify it. " + _EMULATED,
}

# Where the original system's registry and what the pinned ccxt wires up disagree.
TESTNET_NOTES: dict[str, str] = {
    "kraken": "Sandbox is Kraken Futures' demo environment (ccxt krakenfutures).",
    "bitget": "The original listed no testnet; ccxt has no sandbox URL for bitget.",
    "kucoin": "The original claimed a testnet; the pinned ccxt has no kucoinfutures sandbox URL.",
    "bitmex": "ccxt 4.5.90 no longer ships a bitmex class: the adapter cannot be built.",
}

PAPER = BrokerInfo(
    id=PAPER_ID,
    name="Paper (simulator)",
    logo=_logo(PAPER_ID),
    testnet=True,
    kinds=("futures", "perpetuals"),
    linked_orders=True,
    max_leverage=50,
    adapter=PAPER_ADAPTER,
    ccxt_id=None,
    docs_url="",
    example_pairs=("BTC-PERPETUAL", "BTC_USDC-PERPETUAL"),
)

_BY_ID: dict[str, BrokerInfo] = {info.id: info for info in BROKERS}
BROKER_IDS: tuple[str, ...] = tuple(_BY_ID)
BROKER_CHOICES: list[tuple[str, str]] = [(info.id, info.name) for info in BROKERS]


class UnknownBroker(KeyError):
    """A broker id that is not in the registry."""

    def __str__(self) -> str:
        return f"unknown broker {self.args[0]!r}; known: {', '.join(BROKER_IDS)}"


def get_broker_info(broker_id: str) -> BrokerInfo:
    """The registry entry for ``broker_id`` ("paper" included); ``UnknownBroker`` otherwise."""
    if broker_id == PAPER_ID:
        return PAPER
    try:
        return _BY_ID[broker_id]
    except KeyError:
        raise UnknownBroker(broker_id) from None


def is_listed(broker_id: str) -> bool:
    """Whether a trader may connect an account of this broker (paper is built in, not listed)."""
    return broker_id in _BY_ID


def import_adapter(dotted: str) -> type:
    """The adapter class named by a dotted path (``package.module.Class``)."""
    import importlib

    module_name, _, class_name = dotted.rpartition(".")
    return getattr(importlib.import_module(module_name), class_name)
