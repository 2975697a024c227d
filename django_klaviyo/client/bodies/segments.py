"""Segment report bodies: ``POST /api/segment-series-reports``, from clean values."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def build_segment_series(
    segment_ids: Sequence[str], *, timeframe: str, interval: str = "daily"
) -> dict[str, Any]:
    """Daily ``total_members`` of up to 100 segments over a predefined ``timeframe``
    (``"last_30_days"``...); ids are quoted for the ``any(segment_id,[...])`` filter."""
    quoted = ",".join('"' + i.replace("\\", "\\\\").replace('"', '\\"') + '"' for i in segment_ids)
    return {
        "data": {
            "type": "segment-series-report",
            "attributes": {
                "statistics": ["total_members"],
                "timeframe": {"key": timeframe},
                "interval": interval,
                "filter": f"any(segment_id,[{quoted}])",
            },
        }
    }
