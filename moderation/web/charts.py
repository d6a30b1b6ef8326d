"""Server-rendered SVG bar charts for the leads' dashboard.

Pure functions: numbers in, an inline ``<svg>`` element out (``Markup``, so
Jinja does not escape it again). Every label is escaped here. The console's
content security policy forbids inline ``style`` attributes, so colours come
from ``fill`` presentation attributes and ``class`` names that console.css may
override; no script is needed to read a chart. Each bar carries a ``<title>``
(its exact value, shown on hover and read by screen readers), and the page
shows the same numbers in a table next to the chart.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

# Colour-blind-safe defaults (Okabe-Ito), one per series, in order.
PALETTE = ("#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#f0e442")


@dataclass(frozen=True)
class Series:
    """One kind of quantity across the chart's categories (e.g. automatic decisions per hour)."""

    name: str
    values: Sequence[float]


@dataclass(frozen=True)
class Frame:
    width: int = 640
    height: int = 220
    left: int = 44  # room for the y axis labels
    right: int = 8
    top: int = 10
    bottom: int = 44  # room for the x labels and the legend

    @property
    def plot_width(self) -> float:
        return float(self.width - self.left - self.right)

    @property
    def plot_height(self) -> float:
        return float(self.height - self.top - self.bottom)


def nice_max(value: float) -> float:
    """The smallest 1, 2, 2.5 or 5 times a power of ten that is at least ``value``
    (at least 1): a y axis whose ticks are round numbers."""
    if value <= 1:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if step * power >= value:
            return float(step * power)
    return float(10 * power)  # pragma: no cover - the loop always returns


def _number(value: float) -> str:
    return f"{value:g}" if value != int(value) else str(int(value))


def _fmt(value: float) -> str:
    """Coordinates with one decimal: short markup, sub-pixel precision is invisible."""
    return f"{value:.1f}".rstrip("0").rstrip(".")


def bar_chart(
    labels: Sequence[str],
    series: Sequence[Series],
    *,
    title: str,
    frame: Frame | None = None,
    label_every: int = 1,
) -> Markup:
    """Stacked bars, one per label, one segment per series.

    ``label_every`` writes every n-th category label only (24 hourly bars do not
    all fit). Raises ValueError when a series has a different length from
    ``labels``. With no data (no labels, or every value zero) the chart says so."""
    frame = frame or Frame()
    for s in series:
        if len(s.values) != len(labels):
            raise ValueError(f"series {s.name!r} has {len(s.values)} values for {len(labels)} labels")
        if any(v < 0 or not math.isfinite(v) for v in s.values):
            raise ValueError(f"series {s.name!r}: values must be finite and not negative")
    totals = [sum(s.values[i] for s in series) for i in range(len(labels))]
    top = nice_max(max(totals, default=0))
    title_text = escape(title)
    parts = [
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {frame.width} {frame.height}" '
        f'width="{frame.width}" height="{frame.height}" role="img" aria-label="{title_text}">',
        f"<title>{title_text}</title>",
    ]
    parts.extend(_axis(frame, top))
    if not any(totals):
        parts.append(
            f'<text class="chart-empty" x="{_fmt(frame.left + frame.plot_width / 2)}" '
            f'y="{_fmt(frame.top + frame.plot_height / 2)}" text-anchor="middle" fill="#5f6b7a">'
            "no data</text>"
        )
    slot = frame.plot_width / max(len(labels), 1)
    bar_width = max(slot * 0.75, 1.0)
    baseline = frame.top + frame.plot_height
    for i, label in enumerate(labels):
        x = frame.left + i * slot + (slot - bar_width) / 2
        y = baseline
        for index, s in enumerate(series):
            value = s.values[i]
            if value <= 0:
                continue
            height = value / top * frame.plot_height
            y -= height
            parts.append(
                f'<rect class="series-{index}" x="{_fmt(x)}" y="{_fmt(y)}" width="{_fmt(bar_width)}" '
                f'height="{_fmt(height)}" fill="{PALETTE[index % len(PALETTE)]}">'
                f"<title>{escape(label)}: {escape(s.name)} {_number(value)}</title></rect>"
            )
        if i % max(label_every, 1) == 0:
            parts.append(
                f'<text class="chart-label" x="{_fmt(x + bar_width / 2)}" y="{_fmt(baseline + 14)}" '
                f'text-anchor="middle" font-size="11" fill="#5f6b7a">{escape(label)}</text>'
            )
    parts.extend(_legend(frame, series))
    parts.append("</svg>")
    return Markup("".join(parts))


def _axis(frame: Frame, top: float) -> list[str]:
    """The baseline, and y grid lines at 0, half and the top, labelled."""
    lines = []
    for fraction in (0.0, 0.5, 1.0):
        y = frame.top + frame.plot_height * (1 - fraction)
        lines.append(
            f'<line class="chart-grid" x1="{frame.left}" x2="{frame.width - frame.right}" '
            f'y1="{_fmt(y)}" y2="{_fmt(y)}" stroke="#dde1e6"/>'
            f'<text class="chart-tick" x="{frame.left - 4}" y="{_fmt(y + 4)}" text-anchor="end" '
            f'font-size="11" fill="#5f6b7a">{_number(top * fraction)}</text>'
        )
    return lines


def _legend(frame: Frame, series: Sequence[Series]) -> list[str]:
    if len(series) < 2:
        return []
    parts = []
    x = float(frame.left)
    y = frame.height - 8
    for index, s in enumerate(series):
        colour = PALETTE[index % len(PALETTE)]
        name = escape(s.name)
        parts.append(
            f'<rect class="series-{index}" x="{_fmt(x)}" y="{_fmt(y - 9)}" width="10" height="10" '
            f'fill="{colour}"/><text class="chart-legend" x="{_fmt(x + 14)}" y="{_fmt(y)}" '
            f'font-size="11" fill="#1f2733">{name}</text>'
        )
        x += 24 + 7 * len(s.name)
    return parts
