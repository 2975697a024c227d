"""Server-rendered SVG charts for the admin: lines, grouped bars and a ranking.

Each function returns one ``<figure class="dk-chart">``: a caption (the title), an inline
SVG, a legend, and the same figures as a ``<table>`` inside ``<details>``, so nothing is
only a picture. No JavaScript, no ``style=`` attribute, no inline ``<style>``: elements
carry classes (``dk-series-0`` .. ``dk-series-5``, ``dk-grid``, ...) styled by
``django_klaviyo/static/django_klaviyo/charts.css``, which a template includes with
``{% static %}`` (readable in the admin's light and dark themes). Every label is escaped
(campaign names come from Klaviyo and are untrusted); a point's ``url`` becomes a link in
the picture and in the table, and only http(s) and relative URLs are linked. A chart with
no points says so ("No data") instead of drawing an empty frame.

The value axis starts at zero and steps by 1, 2, 2.5 or 5 times a power of ten (whole
steps when every value is whole); values are written with ``unit`` (``format_value``).
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

# The SVG's coordinate system; CSS scales it to the width of its container.
WIDTH = 640
HEIGHT = 240
MARGIN_LEFT = 60
MARGIN_RIGHT = 16
MARGIN_TOP = 14
MARGIN_BOTTOM = 34
# Series colours cycle through this many classes (dk-series-0 ..).
PALETTE_SIZE = 6
# Tick labels on the x axis are thinned to leave about this many pixels each.
X_LABEL_SPACING = 52
# The ranking chart: one row per point, labels in a column of their own.
RANK_ROW = 26
RANK_LABEL_WIDTH = 200
RANK_VALUE_WIDTH = 90
RANK_LABEL_CHARS = 30
TICKS = 4


@dataclass(frozen=True)
class Point:
    """One value at one label (an hour, a day, a campaign). ``url``: where the value came
    from (a link on the bar or dot and in the table). ``display``: shown in place of the
    formatted value in the table and tooltip, e.g. "1,000+" for a lower bound. ``value``
    may be an int or a Decimal (stored as a float); NaN and infinity are refused."""

    label: str
    value: float
    url: str | None = None
    display: str | None = None

    def __post_init__(self) -> None:
        # Money comes as Decimal, counts as int: drawn and written as floats.
        value = float(self.value)
        if not math.isfinite(value):
            raise ValueError(f"chart value of {self.label!r} is not a number: {self.value!r}")
        object.__setattr__(self, "value", value)


@dataclass(frozen=True)
class Series:
    name: str
    points: Sequence[Point]


def format_value(value: float, unit: str = "", *, compact: bool = False) -> str:
    """``1234.5`` -> "1,234.5"; a currency sign goes first ("$1,234.5"), "%" right after
    ("12.5%"), any other unit after a space ("1,234 rows"). ``compact``: "12k", "1.5M"."""
    scale, suffix = _scale(abs(value)) if compact else (1, "")
    return _with_unit(value, _number(abs(value) / scale) + suffix, unit)


def _scale(magnitude: float) -> tuple[int, str]:
    if magnitude >= 1_000_000:
        return 1_000_000, "M"
    if magnitude >= 10_000:
        return 1_000, "k"
    return 1, ""


def _number(magnitude: float) -> str:
    if float(magnitude).is_integer():
        return f"{int(magnitude):,}"
    return _trim(f"{magnitude:,.2f}")


def _with_unit(value: float, number: str, unit: str) -> str:
    sign = "-" if value < 0 and number.strip("0.,kM") else ""
    if not unit:
        return sign + number
    if len(unit) == 1 and unicodedata.category(unit) == "Sc":
        return f"{sign}{unit}{number}"
    if unit == "%":
        return f"{sign}{number}%"
    return f"{sign}{number} {unit}"


def _tick_text(value: float, ticks: Sequence[float], unit: str) -> str:
    """A tick's label, every tick of an axis on one scale: "0, 5k, 10k", not "0, 5,000, 10k"."""
    scale, suffix = _scale(max(abs(ticks[0]), abs(ticks[-1])))
    if not value:
        return _with_unit(0, "0", unit)
    return _with_unit(value, _number(abs(value) / scale) + suffix, unit)


def _trim(number: str) -> str:
    return number.rstrip("0").rstrip(".") if "." in number else number


def nice_ticks(values: Sequence[float], count: int = TICKS) -> list[float]:
    """Axis ticks from the lowest to the highest value, zero included, in round steps."""
    low, high = min(0.0, *values), max(0.0, *values)
    if low == high:
        high = 1.0
    whole = all(float(v).is_integer() for v in values)
    raw = (high - low) / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(
        m * power
        for m in (1, 2, 2.5, 5, 10)
        if m * power >= raw and not (whole and not float(m * power).is_integer())
    )
    if whole:
        step = max(step, 1.0)
    first, last = math.floor(low / step), math.ceil(high / step)
    return [_clean(i * step) for i in range(first, last + 1)]


def _clean(value: float) -> float:
    # 0.1 * 3 -> 0.30000000000000004: ticks are shown, so round away the float noise.
    return round(value, 10)


def line_chart(series: Sequence[Series], *, title: str, unit: str = "") -> SafeString:
    """One line per series over the labels (in order of first appearance), a dot per
    point; a label a series lacks leaves a gap in its line."""
    return _xy_chart(series, title=title, unit=unit, kind="line")


def bar_chart(series: Sequence[Series], *, title: str, unit: str = "") -> SafeString:
    """Grouped bars: for each label (in order of first appearance), one bar per series
    side by side, from zero (so series of different sizes stay readable and comparable)."""
    return _xy_chart(series, title=title, unit=unit, kind="bar")


def ranking_chart(points: Sequence[Point], *, title: str, unit: str = "") -> SafeString:
    """Horizontal bars, the highest value first; each label links to its point's url."""
    ranked = sorted(points, key=lambda p: -p.value)
    if not ranked:
        return _empty(title, "ranking")
    ticks = nice_ticks([p.value for p in ranked])
    low, high = ticks[0], ticks[-1]
    left = RANK_LABEL_WIDTH
    right = WIDTH - RANK_VALUE_WIDTH
    height = MARGIN_TOP + RANK_ROW * len(ranked) + MARGIN_BOTTOM

    def x(value: float) -> float:
        return left + (value - low) / (high - low) * (right - left)

    parts = []
    bottom = MARGIN_TOP + RANK_ROW * len(ranked)
    for tick in ticks:
        parts.append(
            f'<line class="dk-grid" x1="{_n(x(tick))}" x2="{_n(x(tick))}" '
            f'y1="{MARGIN_TOP}" y2="{bottom}"/>'
            f'<text class="dk-tick dk-tick-x" x="{_n(x(tick))}" y="{bottom + 16}">'
            f"{escape(_tick_text(tick, ticks, unit))}</text>"
        )
    for i, point in enumerate(ranked):
        top = MARGIN_TOP + i * RANK_ROW
        start, end = sorted((x(0), x(point.value)))
        shown = _shown(point, unit)
        label = point.label
        short = label if len(label) <= RANK_LABEL_CHARS else label[: RANK_LABEL_CHARS - 1] + "…"
        text = (
            f'<text class="dk-rank-label" x="{left - 8}" y="{_n(top + RANK_ROW / 2 + 4)}">'
            f"<title>{escape(label)}</title>{escape(short)}</text>"
        )
        parts.append(_link(point.url, text))
        bar = (
            f'<rect class="dk-bar dk-series-0" x="{_n(start)}" y="{_n(top + 4)}" '
            f'width="{_n(end - start)}" height="{RANK_ROW - 8}" data-value="{_n(point.value)}">'
            f"<title>{escape(label)}: {escape(shown)}</title></rect>"
        )
        parts.append(_link(point.url, bar))
        parts.append(
            f'<text class="dk-rank-value" x="{_n(end + 6)}" y="{_n(top + RANK_ROW / 2 + 4)}">'
            f"{escape(shown)}</text>"
        )
    parts.append(
        f'<line class="dk-axis" x1="{_n(x(0))}" x2="{_n(x(0))}" y1="{MARGIN_TOP}" y2="{bottom}"/>'
    )
    rows = "".join(
        f'<tr><th scope="row">{_link(p.url, escape(p.label))}</th>'
        f'<td class="dk-num" data-value="{_n(p.value)}">{escape(_shown(p, unit))}</td></tr>'
        for p in ranked
    )
    table = (
        f"<table><caption>{escape(title)}</caption>"
        f'<thead><tr><th scope="col">Name</th><th scope="col">Value</th></tr></thead>'
        f"<tbody>{rows}</tbody></table>"
    )
    links = any(_safe_url(p.url) for p in ranked)
    desc = f"{len(ranked)} ranked, highest {escape(_shown(ranked[0], unit))}"
    return _figure(title, "ranking", _svg(title, desc, height, "".join(parts), links), "", table)


def _xy_chart(series: Sequence[Series], *, title: str, unit: str, kind: str) -> SafeString:
    labels: list[str] = []
    seen: set[str] = set()
    for s in series:
        for p in s.points:
            if p.label not in seen:
                seen.add(p.label)
                labels.append(p.label)
    if not labels:
        return _empty(title, kind)
    by_label = [{p.label: p for p in s.points} for s in series]
    ticks = nice_ticks([p.value for s in series for p in s.points])
    low, high = ticks[0], ticks[-1]
    left, right = MARGIN_LEFT, WIDTH - MARGIN_RIGHT
    top, bottom = MARGIN_TOP, HEIGHT - MARGIN_BOTTOM
    band = (right - left) / len(labels)

    def y(value: float) -> float:
        return bottom - (value - low) / (high - low) * (bottom - top)

    parts = []
    for tick in ticks:
        parts.append(
            f'<line class="dk-grid" x1="{left}" x2="{right}" y1="{_n(y(tick))}" '
            f'y2="{_n(y(tick))}"/><text class="dk-tick dk-tick-y" x="{left - 6}" '
            f'y="{_n(y(tick) + 4)}">{escape(_tick_text(tick, ticks, unit))}</text>'
        )
    every = max(1, math.ceil(len(labels) / max(1, (right - left) // X_LABEL_SPACING)))
    for i, label in enumerate(labels):
        if i % every == 0:
            parts.append(
                f'<text class="dk-tick dk-tick-x" x="{_n(left + band * (i + 0.5))}" '
                f'y="{bottom + 16}">{escape(label)}</text>'
            )
    for index, (s, points) in enumerate(zip(series, by_label, strict=True)):
        colour = f"dk-series-{index % PALETTE_SIZE}"
        if kind == "bar":
            parts.extend(_bars(s, points, labels, index, len(series), colour, band, y, unit))
        else:
            parts.extend(_line(s, points, labels, colour, band, y, unit))
    parts.append(
        f'<line class="dk-axis" x1="{left}" x2="{right}" y1="{_n(y(0))}" y2="{_n(y(0))}"/>'
    )
    legend = "".join(
        f'<li><span class="dk-swatch dk-series-{i % PALETTE_SIZE}"></span>{escape(s.name)}</li>'
        for i, s in enumerate(series)
    )
    head = "".join(f'<th scope="col">{escape(s.name)}</th>' for s in series)
    rows = []
    for label in labels:
        cells = []
        for points in by_label:
            p = points.get(label)
            cells.append(
                '<td class="dk-num">&#8212;</td>'
                if p is None
                else f'<td class="dk-num" data-value="{_n(p.value)}">'
                f"{_link(p.url, escape(_shown(p, unit)))}</td>"
            )
        rows.append(f'<tr><th scope="row">{escape(label)}</th>{"".join(cells)}</tr>')
    table = (
        f"<table><caption>{escape(title)}</caption>"
        f'<thead><tr><th scope="col">Label</th>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )
    links = any(_safe_url(p.url) for s in series for p in s.points)
    desc = (
        "; ".join(f"{escape(s.name)}: {len(s.points)} values" for s in series)
        + f", {escape(labels[0])} to {escape(labels[-1])}"
    )
    svg = _svg(title, desc, HEIGHT, "".join(parts), links)
    return _figure(title, kind, svg, f'<ul class="dk-legend">{legend}</ul>', table)


def _bars(
    s: Series,
    points: dict[str, Point],
    labels: list[str],
    index: int,
    count: int,
    colour: str,
    band: float,
    y: Callable[[float], float],
    unit: str,
) -> list[str]:
    gap = band * 0.15
    width = (band - 2 * gap) / count
    out = []
    for i, label in enumerate(labels):
        p = points.get(label)
        if p is None:
            continue
        x = MARGIN_LEFT + band * i + gap + width * index
        y0, y1 = sorted((y(0), y(p.value)))
        bar = (
            f'<rect class="dk-bar {colour}" x="{_n(x)}" y="{_n(y0)}" width="{_n(width)}" '
            f'height="{_n(y1 - y0)}" data-value="{_n(p.value)}">'
            f"<title>{escape(label)}, {escape(s.name)}: {escape(_shown(p, unit))}</title></rect>"
        )
        out.append(_link(p.url, bar))
    return out


def _line(
    s: Series,
    points: dict[str, Point],
    labels: list[str],
    colour: str,
    band: float,
    y: Callable[[float], float],
    unit: str,
) -> list[str]:
    out: list[str] = []
    run: list[str] = []
    dots: list[str] = []
    for i, label in enumerate([*labels, None]):  # None: ends the last run
        p = None if label is None else points.get(label)
        if p is None:
            if len(run) > 1:
                out.append(f'<polyline class="dk-line {colour}" points="{" ".join(run)}"/>')
            run = []
            continue
        cx, cy = MARGIN_LEFT + band * (i + 0.5), y(p.value)
        run.append(f"{_n(cx)},{_n(cy)}")
        dot = (
            f'<circle class="dk-dot {colour}" cx="{_n(cx)}" cy="{_n(cy)}" r="3" '
            f'data-value="{_n(p.value)}">'
            f"<title>{escape(label)}, {escape(s.name)}: {escape(_shown(p, unit))}</title></circle>"
        )
        dots.append(_link(p.url, dot))
    return out + dots


def _shown(point: Point, unit: str) -> str:
    return point.display if point.display is not None else format_value(point.value, unit)


def _safe_url(url: str | None) -> str | None:
    """``url`` if it is http(s) or relative; a ``javascript:`` or ``data:`` URL is not linked."""
    if not url:
        return None
    scheme = urlsplit(url.strip()).scheme.lower()
    return url if scheme in ("", "http", "https") else None


def _link(url: str | None, inner: str) -> str:
    safe = _safe_url(url)
    return inner if safe is None else f'<a href="{escape(safe)}">{inner}</a>'


def _n(value: float) -> str:
    """A coordinate: two decimals at most, no trailing zeros."""
    return _trim(f"{value:.2f}") or "0"


def _svg(title: str, desc: str, height: int, body: str, links: bool) -> str:
    # With links inside, the picture is a group whose links stay reachable; without, an
    # image named by its title.
    role = "group" if links else "img"
    return (
        f'<svg class="dk-chart-svg" xmlns="http://www.w3.org/2000/svg" '
        f'viewBox="0 0 {WIDTH} {height}" role="{role}" aria-label="{escape(title)}">'
        f"<title>{escape(title)}</title><desc>{desc}</desc>{body}</svg>"
    )


def _figure(title: str, kind: str, svg: str, legend: str, table: str) -> SafeString:
    return mark_safe(  # noqa: S308 - every piece above is escaped where it is built
        f'<figure class="dk-chart dk-chart-{kind}">'
        f'<figcaption class="dk-chart-title">{escape(title)}</figcaption>{svg}{legend}'
        f'<details class="dk-chart-data"><summary>Figures</summary>{table}</details></figure>'
    )


def _empty(title: str, kind: str) -> SafeString:
    return mark_safe(  # noqa: S308 - the title is escaped
        f'<figure class="dk-chart dk-chart-{kind} dk-chart-empty">'
        f'<figcaption class="dk-chart-title">{escape(title)}</figcaption>'
        f'<p class="dk-chart-nodata">No data.</p></figure>'
    )
