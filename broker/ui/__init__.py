"""The read-only dashboard under /ui (SPEC §16): blueprint `ui`, templates, stylesheet."""

from __future__ import annotations

from broker.ui.views import ui

__all__ = ["ui"]
