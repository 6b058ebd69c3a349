"""Public market data: instruments, ticker, chart data, index price."""

from __future__ import annotations
