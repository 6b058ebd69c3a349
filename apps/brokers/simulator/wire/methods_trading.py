"""Private trading and account methods."""

from __future__ import annotations
