"""The charts' geometry (console/charts.py): every bar inside the plot, lengths proportional to
the numbers on an axis that holds the largest, stacks that add up, and a label per bar."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from idguard.console import charts

counts = st.integers(min_value=0, max_value=10**7)


@given(st.floats(min_value=1e-9, max_value=1e12, allow_nan=False))
def test_the_axis_top_is_a_round_number_at_or_above_the_largest(value: float) -> None:
    top = charts.nice_ceiling(value)
    assert top >= value * (1 - 1e-9)
    assert top < value * 10.0001  # never more than one decade above
    mantissa = top / 10 ** math.floor(math.log10(top) + 1e-12)
    assert any(math.isclose(mantissa, m) for m in (1.0, 2.0, 2.5, 5.0, 10.0))


@given(st.floats(min_value=0, max_value=1e9, allow_nan=False), st.booleans())
def test_an_axis_holds_the_largest_in_at_most_five_round_steps(largest: float, integer: bool) -> None:
    top, step = charts.scale(largest, integer=integer)
    steps = top / step
    assert math.isclose(steps, round(steps))
    assert 1 <= round(steps) <= 5
    assert top >= largest * (1 - 1e-9)  # up to floating-point rounding (step × n)
    assert top - step < largest or largest == 0  # the first step at or above
    if integer:
        assert step >= 1
        assert step == int(step)


def test_a_count_axis_ticks_whole_numbers() -> None:
    chart = charts.stacked_columns(["06-01"], ["bank"], {("06-01", "bank"): 3})
    assert [t.text for t in chart.texts if t.anchor == "end"] == ["0", "1", "2", "3"]
    rates = charts.horizontal_bars(["U"], ["a"], {("U", "a"): 0.25}, percent=True)
    assert [t.text for t in rates.texts if t.anchor == "middle"] == ["0%", "5%", "10%", "15%", "20%", "25%"]


def test_nothing_has_an_axis_of_one() -> None:
    assert charts.nice_ceiling(0) == 1.0
    assert charts.nice_ceiling(-3) == 1.0
    assert charts.nice_ceiling(100) == 100.0
    assert charts.nice_ceiling(101) == 200.0
    assert charts.nice_ceiling(0.0031) == 0.005


@given(
    st.lists(
        st.dictionaries(st.sampled_from(["bank", "hotel", "rail"]), counts, max_size=3),
        min_size=1,
        max_size=40,
    )
)
def test_stacked_columns_add_up_and_stay_inside(days: list[dict[str, int]]) -> None:
    categories = [f"d{n}" for n in range(len(days))]
    series = ["bank", "hotel", "rail"]
    values = {(c, s): v for c, day in zip(categories, days, strict=True) for s, v in day.items()}
    chart = charts.stacked_columns(categories, series, values, width=700, height=300)
    top, bottom = 12.0, 300 - 56.0
    largest = max((sum(day.values()) for day in days), default=0)
    ceiling, _ = charts.scale(largest, integer=True)
    for bar in chart.bars:
        assert top - 1e-6 <= bar.y
        assert bar.y + bar.height <= bottom + 1e-6
        assert bar.x >= 56 - 1e-6
        assert bar.x + bar.width <= 700 - 12 + 1e-6
    for c, day in zip(categories, days, strict=True):
        column = [b for b in chart.bars if b.label.startswith(f"{c} · ")]
        assert len(column) == sum(1 for v in day.values() if v > 0)
        total = sum(b.height for b in column)
        assert math.isclose(total, (bottom - top) * sum(day.values()) / ceiling, abs_tol=1e-6)
        for b in column:  # each labelled with its own number
            s = b.label.split(" · ")[1].split(":")[0]
            assert b.label.endswith(f": {day[s]:,}")
    assert chart.empty == (largest == 0)


@given(st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1)), max_size=25))
def test_horizontal_bars_are_proportional(rates: list[tuple[float, float]]) -> None:
    rows = [f"U{n}" for n in range(len(rates))]
    values = {(r, "a"): x for r, (x, _) in zip(rows, rates, strict=True)} | {
        (r, "b"): y for r, (_, y) in zip(rows, rates, strict=True)
    }
    chart = charts.horizontal_bars(rows, ["a", "b"], values, percent=True, width=720)
    plot_w = 720 - 150 - 24
    ceiling, _ = charts.scale(max(values.values(), default=0.0), integer=False)
    assert len(chart.bars) == sum(1 for v in values.values() if v > 0)
    for bar in chart.bars:
        row, rest = bar.label.split(" · ")
        series = rest.split(":")[0]
        assert bar.x == 150
        assert math.isclose(bar.width, plot_w * values[(row, series)] / ceiling)
        assert bar.width <= plot_w + 1e-6
        assert bar.y + bar.height <= chart.height - 56 + 1e-6
    assert {t.text for t in chart.texts} >= set(rows)  # every row named on the axis


def test_a_legend_entry_per_series_in_its_colour() -> None:
    chart = charts.stacked_columns(
        ["06-01"], ["bank", "hotel"], {("06-01", "bank"): 3, ("06-01", "hotel"): 1}
    )
    assert [(k.text, k.fill) for k in chart.legend] == [
        ("bank", charts.PALETTE[0]),
        ("hotel", charts.PALETTE[1]),
    ]
    assert [b.fill for b in chart.bars] == [charts.PALETTE[0], charts.PALETTE[1]]
    assert math.isclose(chart.bars[0].height, 3 * chart.bars[1].height)
