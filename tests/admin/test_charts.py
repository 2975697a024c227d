"""The admin's server-rendered charts: geometry, escaping, links, the empty state, and the
table that carries the same numbers as the picture."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from django_klaviyo.admin.charts import (
    Point,
    Series,
    bar_chart,
    format_value,
    line_chart,
    nice_ticks,
    ranking_chart,
)

CSS = Path(__file__).resolve().parents[2] / "django_klaviyo/static/django_klaviyo/charts.css"


def parse(html: str) -> ET.Element:
    """The chart as XML (it is well-formed), the SVG namespace dropped for short paths."""
    return ET.fromstring(html.replace(' xmlns="http://www.w3.org/2000/svg"', ""))


def table(figure: ET.Element) -> list[list[str]]:
    rows = figure.findall(".//details/table//tr")
    return [["".join(cell.itertext()) for cell in row] for row in rows]


def bars(figure: ET.Element) -> list[ET.Element]:
    return figure.findall(".//svg//rect")


def test_bar_heights_are_proportional_to_the_values_from_a_zero_baseline():
    chart = parse(
        bar_chart(
            [Series("Sent", [Point("10:00", 10), Point("11:00", 40), Point("12:00", 0)])],
            title="Sent per hour",
        )
    )
    rects = bars(chart)
    heights = [float(r.get("height")) for r in rects]
    assert heights[2] == 0
    assert heights[1] == pytest.approx(4 * heights[0])
    # Every bar stands on the same baseline: y + height is the zero line.
    bases = {round(float(r.get("y")) + float(r.get("height")), 1) for r in rects}
    assert len(bases) == 1
    assert [r.get("data-value") for r in rects] == ["10", "40", "0"]


def test_grouped_bars_sit_side_by_side_within_their_label():
    chart = parse(
        bar_chart(
            [
                Series("Sent", [Point("10:00", 8), Point("11:00", 4)]),
                Series("Dead", [Point("10:00", 2), Point("11:00", 1)]),
            ],
            title="Per hour",
        )
    )
    sent, dead = (chart.findall(f".//svg//rect[@class='dk-bar dk-series-{i}']") for i in (0, 1))
    assert len(sent) == len(dead) == 2
    for s, d in zip(sent, dead, strict=True):
        assert float(s.get("x")) + float(s.get("width")) == pytest.approx(float(d.get("x")))
        assert float(s.get("height")) == pytest.approx(4 * float(d.get("height")))
    # The second label's bars are to the right of the first's.
    assert float(sent[1].get("x")) > float(dead[0].get("x"))
    assert ["".join(li.itertext()) for li in chart.findall(".//ul[@class='dk-legend']/li")] == [
        "Sent",
        "Dead",
    ]


def test_line_points_are_placed_by_value_and_a_missing_label_breaks_the_line():
    chart = parse(
        line_chart(
            [
                Series("Revenue", [Point("Mon", 100), Point("Tue", 300), Point("Thu", 200)]),
                Series("Orders", [Point("Wed", 50)]),
            ],
            title="Revenue",
            unit="$",
        )
    )
    dots = chart.findall(".//svg//circle")
    by_value = {d.get("data-value"): float(d.get("cy")) for d in dots}
    zero = float(chart.find(".//svg/line[@class='dk-axis']").get("y1"))
    assert (zero - by_value["300"]) == pytest.approx(3 * (zero - by_value["100"]), abs=0.05)
    assert (zero - by_value["200"]) == pytest.approx(2 * (zero - by_value["100"]), abs=0.05)
    # Labels in order of first appearance: Mon, Tue, Thu, Wed; x grows along them.
    xs = [float(d.get("cx")) for d in dots if d.get("class").endswith("dk-series-0")]
    assert xs == sorted(xs)
    # Revenue has no Wed (4th label): one line through Mon, Tue, Thu; Orders: a dot alone.
    lines = chart.findall(".//svg/polyline")
    assert len(lines) == 1
    assert len(lines[0].get("points").split()) == 3


def test_ticks_are_round_and_cover_the_values():
    assert nice_ticks([7, 93]) == [0, 25, 50, 75, 100]
    assert nice_ticks([3]) == [0, 1, 2, 3]
    assert nice_ticks([0, 0]) == [0, 1]
    assert nice_ticks([0.3]) == [0, 0.1, 0.2, 0.3]
    assert nice_ticks([1_234_567]) == [0, 500_000, 1_000_000, 1_500_000]
    assert nice_ticks([-40, 90]) == [-50, 0, 50, 100]
    chart = parse(bar_chart([Series("n", [Point("a", 12_345)])], title="t", unit="$"))
    ticks = [t.text for t in chart.findall(".//svg/text[@class='dk-tick dk-tick-y']")]
    assert ticks == ["$0", "$5k", "$10k", "$15k"]


def test_values_are_written_with_their_unit():
    assert format_value(1234.5, "$") == "$1,234.5"
    assert format_value(-5, "€") == "-€5"
    assert format_value(12.345, "%") == "12.35%"
    assert format_value(1200, "rows") == "1,200 rows"
    assert format_value(3) == "3"
    assert format_value(1_500_000, "$", compact=True) == "$1.5M"
    assert format_value(-12_500, "rows", compact=True) == "-12.5k rows"
    assert format_value(9_999, compact=True) == "9,999"


def test_the_table_carries_the_same_numbers_as_the_bars():
    series = [
        Series("Sent", [Point("10:00", 1200), Point("11:00", 35, display="35+")]),
        Series("Dead", [Point("10:00", 2.5)]),
    ]
    chart = parse(bar_chart(series, title="Per hour", unit="rows"))
    assert table(chart) == [
        ["Label", "Sent", "Dead"],
        ["10:00", "1,200 rows", "2.5 rows"],
        ["11:00", "35+", "\u2014"],
    ]
    cells = chart.findall(".//details/table/tbody//td[@data-value]")
    assert sorted(float(c.get("data-value")) for c in cells) == sorted(
        float(r.get("data-value")) for r in bars(chart)
    )
    assert chart.find(".//details/table/caption").text == "Per hour"
    # Each bar names its value too.
    titles = ["".join(r.find("title").itertext()) for r in bars(chart)]
    assert titles == ["10:00, Sent: 1,200 rows", "11:00, Sent: 35+", "10:00, Dead: 2.5 rows"]


def test_ranking_is_highest_first_with_proportional_widths_and_linked_labels():
    chart = parse(
        ranking_chart(
            [
                Point("Welcome flow", 250.0, url="https://www.klaviyo.com/flow/F1"),
                Point("Black Friday", 1000.0, url="https://www.klaviyo.com/campaign/C1"),
                Point("Unlinked", 500.0),
            ],
            title="Revenue by campaign",
            unit="$",
        )
    )
    rects = bars(chart)
    assert [r.get("data-value") for r in rects] == ["1000", "500", "250"]
    widths = [float(r.get("width")) for r in rects]
    assert widths[0] == pytest.approx(2 * widths[1]) == pytest.approx(4 * widths[2])
    links = chart.findall(".//svg//a")
    assert {a.get("href") for a in links} == {
        "https://www.klaviyo.com/campaign/C1",
        "https://www.klaviyo.com/flow/F1",
    }
    linked_labels = {a.find("text/title").text for a in links if a.find("text") is not None}
    assert linked_labels == {"Black Friday", "Welcome flow"}
    assert table(chart)[1:] == [
        ["Black Friday", "$1,000"],
        ["Unlinked", "$500"],
        ["Welcome flow", "$250"],
    ]
    table_links = chart.findall(".//details/table//a")
    assert [a.get("href") for a in table_links] == [
        "https://www.klaviyo.com/campaign/C1",
        "https://www.klaviyo.com/flow/F1",
    ]
    # Links inside: the picture is a group (its links reachable), not a flat image.
    assert chart.find("svg").get("role") == "group"


def test_long_labels_are_shortened_in_the_picture_and_whole_in_the_title_and_table():
    name = "Spring sale — our biggest discounts of the whole year, extended"
    chart = parse(ranking_chart([Point(name, 10)], title="Top"))
    text = chart.find(".//svg/text[@class='dk-rank-label']")
    assert text.find("title").text == name
    shown = text.find("title").tail
    assert shown.endswith("…")
    assert len(shown) <= 30
    assert table(chart)[1][0] == name


def test_labels_names_and_titles_are_escaped():
    hostile = '<script>alert("x")</script> & "quotes"'
    outputs = [
        line_chart([Series(hostile, [Point(hostile, 1)])], title=hostile),
        bar_chart([Series(hostile, [Point(hostile, 1)])], title=hostile),
        ranking_chart([Point(hostile, 1, url='https://x.test/"><script>')], title=hostile),
        bar_chart([], title=hostile),
    ]
    for html in outputs:
        assert "<script>" not in html
        assert "&lt;script&gt;" in html
        parse(html)  # still well-formed: nothing broke out of an attribute or element


def test_only_http_and_relative_urls_become_links():
    chart = parse(
        ranking_chart(
            [
                Point("a", 3, url="javascript:alert(1)"),
                Point("b", 2, url="data:text/html,hi"),
                Point("c", 1, url="/admin/django_klaviyo/klaviyocampaign/1/"),
            ],
            title="t",
        )
    )
    hrefs = {a.get("href") for a in chart.iter("a")}
    assert hrefs == {"/admin/django_klaviyo/klaviyocampaign/1/"}


def test_points_with_urls_link_from_bars_and_dots_and_the_table():
    for render in (line_chart, bar_chart):
        chart = parse(render([Series("n", [Point("a", 1, url="https://k.test/1")])], title="t"))
        link = chart.find(".//svg//a")
        assert link.get("href") == "https://k.test/1"
        assert link.find("rect") is not None or link.find("circle") is not None
        assert chart.find(".//details//td/a").get("href") == "https://k.test/1"


@pytest.mark.parametrize("render", [line_chart, bar_chart])
def test_no_points_render_an_explicit_no_data_state(render):
    for series in ([], [Series("Sent", [])]):
        chart = parse(render(series, title="Last 24 hours"))
        assert "dk-chart-empty" in chart.get("class")
        assert chart.find("figcaption").text == "Last 24 hours"
        assert chart.find("p").text == "No data."
        assert chart.find(".//svg") is None


def test_an_empty_ranking_says_so():
    chart = parse(ranking_chart([], title="Top campaigns"))
    assert chart.find("p").text == "No data."


def test_all_zero_values_draw_an_axis_not_a_division_by_zero():
    chart = parse(bar_chart([Series("Dead", [Point("a", 0), Point("b", 0)])], title="t"))
    assert [float(r.get("height")) for r in bars(chart)] == [0, 0]
    assert table(chart)[1:] == [["a", "0"], ["b", "0"]]


def test_charts_need_no_script_and_no_style_attribute_and_their_classes_are_styled():
    html = str(
        bar_chart([Series("s", [Point("a", 1)]), Series("t", [Point("a", 2)])], title="t")
        + line_chart([Series("s", [Point("a", 1)])], title="t")
        + ranking_chart([Point("a", 1, url="/x/")], title="t")
    )
    assert "<script" not in html
    assert "style=" not in html
    assert "<style" not in html
    css = CSS.read_text()
    classes = {
        c
        for chunk in ET.fromstring(f"<r>{html}</r>").iter()
        for c in (chunk.get("class") or "").split()
    }
    # The kind of chart (dk-chart-bar, ...) is a hook for a page's own CSS; the rest is styled.
    for name in classes - {"dk-chart-line", "dk-chart-bar", "dk-chart-ranking"}:
        assert f".{name}" in css, name
    # Both admin themes: the OS preference and the admin's own toggle.
    assert "prefers-color-scheme: dark" in css
    assert 'html[data-theme="dark"]' in css


def test_many_labels_thin_the_axis_labels_but_keep_every_bar():
    points = [Point(f"{h:02d}:00", h) for h in range(24)]
    chart = parse(bar_chart([Series("Sent", points)], title="24 hours"))
    assert len(bars(chart)) == 24
    shown = [t.text for t in chart.findall(".//svg/text[@class='dk-tick dk-tick-x']")]
    assert 4 <= len(shown) < 24
    assert shown[0] == "00:00"
    assert len(table(chart)) == 25


def test_decimal_and_int_values_are_drawn_and_nan_is_refused():
    from decimal import Decimal

    chart = parse(
        bar_chart(
            [Series("Revenue", [Point("Mon", Decimal("12.50")), Point("Tue", 25)])],
            title="t",
            unit="$",
        )
    )
    assert table(chart)[1:] == [["Mon", "$12.5"], ["Tue", "$25"]]
    heights = [float(r.get("height")) for r in bars(chart)]
    assert heights[1] == pytest.approx(2 * heights[0])
    with pytest.raises(ValueError, match="'Mon'"):
        Point("Mon", float("nan"))
