"""Charts for the supervisors' statistics, drawn on the server as SVG (no chart library, no
script): this module only computes the geometry — bars, axis ticks, labels — from the numbers;
`templates/staff/accountability_chart.html` turns it into `<svg>` markup with a title and a
description, and every page that shows a chart shows its numbers as a table too.

Pure: no web framework, no database, so the geometry is tested on its own (tests/unit/console).
Colours are SVG `fill` attributes (the Content-Security-Policy allows no inline style), chosen from
a palette whose every colour keeps a 3:1 contrast with the white background (WCAG's non-text
contrast); the labels are dark grey text.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

# Okabe–Ito based, darkened where needed to keep 3:1 against white.
PALETTE = ("#0072b2", "#d55e00", "#009e73", "#cc79a7", "#8a6d00", "#56509e", "#b0413e", "#3d7a8a")


@dataclass(frozen=True, slots=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    fill: str
    label: str  # what the bar is, with its number (an SVG <title>: read by screen readers, a tooltip)


@dataclass(frozen=True, slots=True)
class Text:
    x: float
    y: float
    text: str
    anchor: str = "middle"  # SVG text-anchor


@dataclass(frozen=True, slots=True)
class Line:
    x1: float
    y1: float
    x2: float
    y2: float


@dataclass(frozen=True, slots=True)
class Key:
    """One entry of the legend."""

    x: float
    y: float
    fill: str
    text: str


@dataclass(frozen=True, slots=True)
class Chart:
    width: float
    height: float
    bars: list[Bar] = field(default_factory=list)
    texts: list[Text] = field(default_factory=list)
    grid: list[Line] = field(default_factory=list)
    legend: list[Key] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.bars


def nice_ceiling(value: float) -> float:
    """The smallest 1, 2, 2.5 or 5 × 10^k at or above `value` (an axis' top); 1 for nothing."""
    if value <= 0 or not math.isfinite(value):
        return 1.0
    exponent = math.floor(math.log10(value))
    for step in (1.0, 2.0, 2.5, 5.0, 10.0):
        top = step * 10.0**exponent
        if top >= value * (1 - 1e-12):
            return top
    return 10.0 ** (exponent + 1)  # pragma: no cover - the loop ends at 10 × 10^k


def scale(largest: float, *, integer: bool) -> tuple[float, float]:
    """(the axis' top, the step between its ticks): at most five steps of 1, 2, 2.5 or 5 × 10^k,
    the top the first step at or above `largest`. A count axis never ticks at a fraction: 3
    checks tick 0, 1, 2, 3, not 0.75 (so its step is at least 1, and never 2.5)."""
    if largest <= 0:
        return (4.0, 1.0) if integer else (1.0, 0.25)
    step = nice_ceiling(largest / 5)
    if integer:
        step = 1.0 if step < 1 else (5.0 if step == 2.5 else step)
    return step * max(1, math.ceil(largest / step - 1e-9)), step


def _tick_text(value: float, percent: bool) -> str:
    if percent:
        return f"{round(value * 100, 6):g}%"
    return f"{value:,.0f}" if value == int(value) else f"{value:,g}"


def stacked_columns(
    categories: Sequence[str],
    series: Sequence[str],
    values: Mapping[tuple[str, str], int],
    *,
    width: float = 720,
    height: float = 280,
    label_every: int | None = None,
) -> Chart:
    """One column per category (a day), stacked by series (a sector): a column's height is the
    category's total. `values[(category, series)]`; absent pairs are 0."""
    left, right, top, bottom = 56.0, 12.0, 12.0, 56.0
    plot_w, plot_h = width - left - right, height - top - bottom
    totals = [sum(values.get((c, s), 0) for s in series) for c in categories]
    ceiling, step = scale(max(totals, default=0), integer=True)
    chart = Chart(width, height)
    _y_axis(chart, left, top, plot_w, plot_h, ceiling, step, percent=False)
    if not categories:
        return chart
    slot = plot_w / len(categories)
    bar_w = max(1.0, slot * 0.7)
    every = label_every or max(1, math.ceil(len(categories) / 12))
    colour = {s: PALETTE[n % len(PALETTE)] for n, s in enumerate(series)}
    for n, category in enumerate(categories):
        x = left + n * slot + (slot - bar_w) / 2
        base = top + plot_h
        for s in series:
            v = values.get((category, s), 0)
            if v <= 0:
                continue
            h = plot_h * v / ceiling
            base -= h
            chart.bars.append(Bar(x, base, bar_w, h, colour[s], f"{category} · {s}: {v:,}"))
        if n % every == 0:
            chart.texts.append(Text(x + bar_w / 2, top + plot_h + 16, category))
    _legend(chart, [(s, colour[s]) for s in series], left, height - 22)
    return chart


def horizontal_bars(
    rows: Sequence[str],
    series: Sequence[str],
    values: Mapping[tuple[str, str], float],
    *,
    percent: bool = False,
    width: float = 720,
    row_height: float = 28,
) -> Chart:
    """One group of horizontal bars per row (a unit), one bar per series (invalid rate, mismatch
    rate); bar lengths are proportional to the values on a shared axis from 0."""
    left, right, top, bottom = 150.0, 24.0, 12.0, 56.0
    height = top + bottom + row_height * max(1, len(rows))
    plot_w, plot_h = width - left - right, row_height * max(1, len(rows))
    largest = max((values.get((r, s), 0.0) for r in rows for s in series), default=0.0)
    ceiling, step = scale(largest, integer=not percent)
    chart = Chart(width, height)
    _x_axis(chart, left, top, plot_w, plot_h, ceiling, step, percent=percent)
    colour = {s: PALETTE[n % len(PALETTE)] for n, s in enumerate(series)}
    band = (row_height * 0.8) / max(1, len(series))
    for n, row in enumerate(rows):
        y0 = top + n * row_height + row_height * 0.1
        chart.texts.append(Text(left - 6, y0 + row_height * 0.4 + 4, row, anchor="end"))
        for k, s in enumerate(series):
            v = values.get((row, s), 0.0)
            if v <= 0:
                continue
            shown = _tick_text(v, percent) if percent else f"{v:,.0f}"
            chart.bars.append(
                Bar(left, y0 + k * band, plot_w * v / ceiling, band * 0.9, colour[s], f"{row} · {s}: {shown}")
            )
    if len(series) > 1:
        _legend(chart, [(s, colour[s]) for s in series], left, height - 22)
    return chart


def _ticks(ceiling: float, step: float) -> list[float]:
    return [step * n for n in range(round(ceiling / step) + 1)]


def _y_axis(
    chart: Chart, left: float, top: float, w: float, h: float, ceiling: float, step: float, *, percent: bool
) -> None:
    for value in _ticks(ceiling, step):
        y = top + h - h * value / ceiling
        chart.grid.append(Line(left, y, left + w, y))
        chart.texts.append(Text(left - 6, y + 4, _tick_text(value, percent), anchor="end"))


def _x_axis(
    chart: Chart, left: float, top: float, w: float, h: float, ceiling: float, step: float, *, percent: bool
) -> None:
    for value in _ticks(ceiling, step):
        x = left + w * value / ceiling
        chart.grid.append(Line(x, top, x, top + h))
        chart.texts.append(Text(x, top + h + 16, _tick_text(value, percent)))


def _legend(chart: Chart, items: Sequence[tuple[str, str]], x: float, y: float) -> None:
    for name, fill in items:
        chart.legend.append(Key(x, y, fill, name))
        x += 24 + 8 * max(4, len(name)) + (8 * sum(1 for ch in name if ord(ch) > 0x2E80))
