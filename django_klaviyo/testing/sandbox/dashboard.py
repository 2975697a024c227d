"""The sandbox's HTML overview page (GET /__sandbox__/): counts, profiles, lists, events.

Everything shown is escaped; no API key or webhook secret is ever part of the data.
"""

from __future__ import annotations

import json
from html import escape
from typing import Any

from django_klaviyo.testing.sandbox.faults import FaultConfig


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    if not rows:
        return "<p class=empty>None yet.</p>"
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape('' if c is None else str(c))}</td>" for c in row) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_dashboard(
    summary: dict[str, Any],
    profiles: dict[str, dict[str, Any]],
    faults: FaultConfig,
    time_scale: float,
    *,
    max_profiles: int = 100,
) -> str:
    metrics = [[name, count] for name, count in summary["metrics"].items()]
    lists = [[list_id, data["name"], data["members"]] for list_id, data in summary["lists"].items()]
    newest = list(profiles.values())[-max_profiles:][::-1]
    profile_rows = [
        [p["id"], p.get("email"), p.get("phone_number"), p.get("external_id"), p.get("updated")]
        for p in newest
    ]
    events = [
        [e["received_at"], e["metric"], json.dumps(e["profile"]), e["unique_id"], e["value"]]
        for e in summary["latest_events"]
    ]
    requests = [
        [op, ", ".join(f"{status}: {n}" for status, n in statuses.items())]
        for op, statuses in summary["requests"].items()
    ]
    fault_text = ", ".join(f"{k}={v}" for k, v in faults.as_dict().items() if v)
    return f"""<!doctype html>
<html lang=en><head><meta charset=utf-8><title>Klaviyo sandbox</title>
<style>
body{{font:14px system-ui,sans-serif;margin:2em;color:#222}}
table{{border-collapse:collapse;margin-bottom:1.5em}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}
th{{background:#f4f4f4}} .empty{{color:#888}}
</style></head><body>
<h1>Klaviyo sandbox</h1>
<p>{summary["events"]} events recorded ({summary["duplicate_events"]} duplicates ignored),
{summary["profiles"]} profiles, {len(summary["lists"])} lists,
{summary["subscriptions"]} subscriptions, {summary["unsubscriptions"]} unsubscriptions,
{summary["deletion_requests"]} deletion requests, {summary["webhooks"]} webhooks.
Time scale {time_scale:g}. Faults: {escape(fault_text or "none")}.</p>
<h2>Events per metric</h2>{_table(["Metric", "Events"], metrics)}
<h2>Latest events</h2>{_table(["Received", "Metric", "Profile", "unique_id", "Value"], events)}
<h2>Profiles</h2>{_table(["Id", "Email", "Phone", "External id", "Updated"], profile_rows)}
<h2>Lists</h2>{_table(["Id", "Name", "Members"], lists)}
<h2>Requests</h2>{_table(["Operation", "Status: count"], requests)}
</body></html>
"""
