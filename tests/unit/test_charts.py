"""Server-side SVG charts: well-formed, escaped, honest about empty data, no inline styles."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest
from markupsafe import Markup

from moderation.web.charts import Frame, Series, bar_chart, nice_max

SVG = "{http://www.w3.org/2000/svg}"
EVIL = '<script>alert(1)</script>"&'


def _parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)  # raises on anything that is not well-formed XML


def _bars(root: ET.Element) -> list[ET.Element]:
    return [r for r in root.iter(f"{SVG}rect") if r.find(f"{SVG}title") is not None]


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0, 1), (1, 1), (3, 5), (7, 10), (12, 20), (21, 25), (26, 50), (180, 200), (1001, 2000)],
)
def test_nice_max_rounds_up_to_a_round_number(value, expected):
    assert nice_max(value) == expected


def test_bars_are_stacked_and_scaled_to_the_axis():
    svg = bar_chart(
        ["a", "b", "c"], [Series("one", [1, 0, 4]), Series("two", [1, 2, 1])], title="Counts", frame=Frame()
    )
    assert isinstance(svg, Markup)
    root = _parse(svg)
    bars = _bars(root)
    titles = sorted(b.find(f"{SVG}title").text for b in bars)  # type: ignore[union-attr]
    assert titles == ["a: one 1", "a: two 1", "b: two 2", "c: one 4", "c: two 1"]  # zero bars left out
    plot = Frame().plot_height
    heights = {b.find(f"{SVG}title").text: float(b.get("height")) for b in bars}  # type: ignore[union-attr,arg-type]
    # Tallest stack is 5 and the axis top is 5: c fills the plot.
    assert heights["c: one 4"] + heights["c: two 1"] == pytest.approx(plot, abs=0.2)
    assert heights["b: two 2"] == pytest.approx(plot * 2 / 5, abs=0.1)
    # The second series sits on the first one.
    c_one = next(b for b in bars if b.find(f"{SVG}title").text == "c: one 4")  # type: ignore[union-attr]
    c_two = next(b for b in bars if b.find(f"{SVG}title").text == "c: two 1")  # type: ignore[union-attr]
    assert float(c_two.get("y")) + float(c_two.get("height")) == pytest.approx(float(c_one.get("y")), abs=0.2)  # type: ignore[arg-type]
    assert "two" in "".join(t.text or "" for t in root.iter(f"{SVG}text"))  # legend with two series


def test_labels_and_titles_are_escaped():
    svg = str(bar_chart([EVIL], [Series(EVIL, [3])], title=EVIL))
    assert "<script>" not in svg
    assert "&lt;script&gt;" in svg
    root = _parse(svg)
    assert root.get("aria-label") == EVIL  # the parsed text is the original, so nothing was lost
    assert root.find(f"{SVG}title").text == EVIL  # type: ignore[union-attr]
    assert [t.text for t in root.iter(f"{SVG}text") if t.get("class") == "chart-label"] == [EVIL]


def test_no_data_says_so():
    for labels, series in (([], []), (["a", "b"], [Series("s", [0, 0])]), (["a"], [])):
        root = _parse(bar_chart(labels, series, title="Empty"))
        assert not _bars(root)
        assert any(t.text == "no data" for t in root.iter(f"{SVG}text"))


def test_no_inline_styles_and_no_script():
    svg = str(bar_chart(["a"] * 24, [Series("s", list(range(24)))], title="t", label_every=3))
    assert "style=" not in svg and "<script" not in svg.lower() and "onload" not in svg
    labels = [t for t in _parse(svg).iter(f"{SVG}text") if t.get("class") == "chart-label"]
    assert len(labels) == 8  # every third of 24
    assert re.search(r'fill="#[0-9a-f]{6}"', svg)


def test_invalid_series_are_refused():
    with pytest.raises(ValueError, match="2 values for 3 labels"):
        bar_chart(["a", "b", "c"], [Series("s", [1, 2])], title="t")
    with pytest.raises(ValueError, match="finite"):
        bar_chart(["a"], [Series("s", [-1])], title="t")
    with pytest.raises(ValueError, match="finite"):
        bar_chart(["a"], [Series("s", [float("nan")])], title="t")
