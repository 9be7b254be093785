"""The first stage's geometry (`scan.consistency`, issue 10's tenth round): the vote's first fingers
ranked again by how their found pairs agree on where the minutiae lie. Checked against a plain
Python transcription of the rule (float64, arctangents), on a finger moved rigidly (every pair
agrees), and on the ranking it gives a search."""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from idguard.biometrics import identification, scan
from idguard.biometrics.identification import IndexParams

BINS, WINDOW = 36, 3
DISTANCE, ANGLE, ROTATION = 15.5, 20.5, 21  # pixels, degrees, direction steps
CELL = identification._cell_table(BINS)
UNIT = identification._unit_table()


@dataclass(frozen=True)
class Pair:
    finger: int  # its slot
    live: int  # live cylinder
    reg: int  # registered minutia (within the finger)
    reg_x: int
    reg_y: int
    reg_theta: int  # direction byte
    weight: int


def _label(p: Pair) -> int:
    off = identification.POSITION_OFFSET
    return (
        (p.finger << identification.SLOT_SHIFT)
        | ((p.reg_x + off) << (8 + identification.POSITION_BITS))
        | ((p.reg_y + off) << 8)
        | p.reg_theta
    )


def _votes(pairs: list[Pair], live_theta: list[int], fingers: int) -> np.ndarray:
    votes = np.zeros(BINS * fingers, dtype=np.int32)
    for p in pairs:
        votes[CELL[(live_theta[p.live] - p.reg_theta) & 255] * fingers + p.finger] += p.weight
    return votes


def _starts(pairs: list[Pair], live_theta: list[int], fingers: int) -> np.ndarray:
    """Each finger's first cell of its best window, as the first stage finds it (`scan.windows`)."""
    start = np.zeros(fingers, dtype=np.int8)
    scan.windows(_votes(pairs, live_theta, fingers), BINS, WINDOW, np.zeros(fingers, np.int32), start)
    return start


def _kernel(
    pairs: list[Pair],
    live_xy: list[tuple[int, int]],
    live_theta: list[int],
    named: list[int],
    rotation: int = ROTATION,
) -> list[int]:
    fingers = max([p.finger for p in pairs] + named) + 1
    place = np.full(fingers, -1, dtype=np.int32)
    place[named] = np.arange(len(named), dtype=np.int32)
    out = np.zeros(len(named), dtype=np.int64)
    scan.consistency(
        np.array([_label(p) for p in pairs], dtype=np.int64),
        np.array([p.live for p in pairs], dtype=np.int16),
        np.array([p.weight for p in pairs], dtype=np.int32),
        len(pairs),
        place,
        _starts(pairs, live_theta, fingers),
        CELL,
        BINS,
        WINDOW,
        np.array(live_xy, dtype=np.float32).reshape(-1, 2),
        np.array(live_theta, dtype=np.int64),
        UNIT,
        DISTANCE,
        math.cos(math.radians(ANGLE)),
        rotation,
        out,
    )
    return out.tolist()


def _wrap(a: float) -> float:
    return (a + math.pi) % (2 * math.pi) - math.pi


def _reference(
    pairs: list[Pair], live_xy: list[tuple[int, int]], live_theta: list[int], named: list[int]
) -> tuple[list[int], bool]:
    """The rule as written, and whether some comparison lay within a hair of a tolerance (where
    float32 and float64 may disagree)."""
    fingers = max([p.finger for p in pairs] + named) + 1
    votes = _votes(pairs, live_theta, fingers).reshape(BINS, fingers)
    step = 2 * math.pi / 256
    close = False
    out = []
    for f in named:
        sums = [sum(int(votes[(c + d) % BINS, f]) for d in range(WINDOW)) for c in range(BINS)]
        first = sums.index(max(sums))
        mine = [
            p
            for p in pairs
            if p.finger == f
            and (
                (CELL[(live_theta[p.live] - p.reg_theta) & 255] - first) % BINS <= WINDOW
                or (CELL[(live_theta[p.live] - p.reg_theta) & 255] - first) % BINS == BINS - 1
            )
        ]
        best = 0
        for a in mine:
            heaviest: dict[int, int] = {}
            for b in mine:
                # one registered minutia: the same place and direction (the kernel knows no more)
                if b.live == a.live or (b.reg_x, b.reg_y, b.reg_theta) == (a.reg_x, a.reg_y, a.reg_theta):
                    continue
                rot_a = (live_theta[a.live] - a.reg_theta) & 255
                rot_b = (live_theta[b.live] - b.reg_theta) & 255
                if min((rot_a - rot_b) & 255, (rot_b - rot_a) & 255) > ROTATION:
                    continue
                (ax, ay), (bx, by) = live_xy[a.live], live_xy[b.live]
                dl = math.hypot(bx - ax, by - ay)
                dr = math.hypot(b.reg_x - a.reg_x, b.reg_y - a.reg_y)
                close |= abs(abs(dl - dr) - DISTANCE) < 1e-3
                if abs(dl - dr) > DISTANCE:
                    continue
                if dl > 0 and dr > 0:
                    seen_live = _wrap(math.atan2(by - ay, bx - ax) - live_theta[a.live] * step)
                    seen_reg = _wrap(math.atan2(b.reg_y - a.reg_y, b.reg_x - a.reg_x) - a.reg_theta * step)
                    off = abs(_wrap(seen_live - seen_reg))
                    close |= abs(off - math.radians(ANGLE)) < 1e-3
                    if off > math.radians(ANGLE):
                        continue
                heaviest[b.live] = max(heaviest.get(b.live, 0), b.weight)
            best = max(best, a.weight + sum(heaviest.values()))
        out.append(best)
    return out, close


@st.composite
def _cases(draw: st.DrawFn) -> tuple[list[Pair], list[tuple[int, int]], list[int], list[int]]:
    n_live = draw(st.integers(1, 8))
    live_xy = [(draw(st.integers(0, 60)), draw(st.integers(0, 60))) for _ in range(n_live)]
    live_theta = [draw(st.integers(0, 255)) for _ in range(n_live)]
    fingers = draw(st.integers(1, 3))
    pairs = []
    for f in range(fingers):
        minutiae = [
            (draw(st.integers(0, 60)), draw(st.integers(0, 60)), draw(st.integers(0, 255)))
            for _ in range(draw(st.integers(1, 6)))
        ]
        for _ in range(draw(st.integers(0, 10))):
            m = draw(st.integers(0, len(minutiae) - 1))
            x, y, t = minutiae[m]
            pairs.append(Pair(f, draw(st.integers(0, n_live - 1)), m, x, y, t, draw(st.integers(1, 20_000))))
    assume(pairs)
    named = draw(st.lists(st.integers(0, fingers - 1), unique=True, min_size=1))
    return pairs, live_xy, live_theta, named


@settings(max_examples=300, deadline=None)
@given(_cases())
def test_the_compiled_geometry_follows_the_rule(
    case: tuple[list[Pair], list[tuple[int, int]], list[int], list[int]],
) -> None:
    """Per named finger: its pairs within a cell of its best rotation window; over them, the
    largest weight of a pair plus, per other live cylinder, its heaviest pair agreeing with it
    (rotations within 21 steps, distances within 15.5 px, the other minutia seen in the same
    direction within 20.5 degrees on both sides). Fingers not named are not scored."""
    pairs, live_xy, live_theta, named = case
    want, close = _reference(pairs, live_xy, live_theta, named)
    assume(not close)
    assert _kernel(pairs, live_xy, live_theta, named) == want


def _cell_byte(cell: int) -> int:
    """A direction byte inside rotation cell `cell`."""
    return math.ceil(cell * 256 / BINS) + 1


def test_a_finger_counts_its_pairs_within_a_cell_of_its_window_and_each_live_cylinders_heaviest() -> None:
    """Every live minutia at one place, the registered ones a few pixels apart, and any rotation
    allowed, so every two pairs agree: a finger then
    scores, per live cylinder, its heaviest pair among those whose rotation lies in the best window
    (cells 10-12 here) or a cell either side of it (9 and 13), not two cells away (8, 14)."""
    cells = {0: 10, 1: 11, 2: 12, 3: 9, 4: 13, 5: 14, 6: 8}
    weights = {0: 10_000, 1: 10_000, 2: 10_000, 3: 5_000, 4: 5_000, 5: 5_000, 6: 5_000}
    live_theta = [_cell_byte(cells[i]) for i in range(7)]
    pairs = [Pair(0, i, i, i, 0, 0, weights[i]) for i in range(7)]
    # lighter second pairs of live cylinders 0 and 1, found after their heavier ones
    pairs += [Pair(0, 0, 7, 7, 0, 0, 3_000), Pair(0, 1, 8, 8, 0, 0, 3_000)]
    assert _kernel(pairs, [(0, 0)] * 7, live_theta, [0], rotation=128) == [40_000]


def _finger(
    slot: int, live_xy: list[tuple[float, float]], live_theta: list[int], turn: int, shift: tuple[int, int]
) -> list[Pair]:
    """The live minutiae moved rigidly: turned by `turn` direction steps, then shifted."""
    a = turn * 2 * math.pi / 256
    c, s = math.cos(a), math.sin(a)
    out = []
    for i, ((x, y), t) in enumerate(zip(live_xy, live_theta, strict=True)):
        rx, ry = round(c * x - s * y) + shift[0], round(s * x + c * y) + shift[1]
        out.append(Pair(slot, i, i, rx, ry, (t + turn) & 255, 4096))
    return out


def test_a_finger_moved_rigidly_agrees_in_every_pair_and_a_scrambled_one_does_not() -> None:
    rng = np.random.default_rng(11)
    live_xy = [(float(x), float(y)) for x, y in rng.integers(50, 450, size=(12, 2))]
    live_theta = rng.integers(0, 256, size=12).tolist()
    moved = _finger(0, live_xy, live_theta, turn=40, shift=(-70, 35))
    # the same minutiae and directions, their positions handed to other minutiae
    perm = rng.permutation(12)
    scrambled = [
        Pair(1, p.live, p.reg, moved[perm[i]].reg_x, moved[perm[i]].reg_y, p.reg_theta, p.weight)
        for i, p in enumerate(moved)
    ]
    rigid, mixed = _kernel(moved + scrambled, [(round(x), round(y)) for x, y in live_xy], live_theta, [0, 1])
    assert rigid == 12 * 4096  # every live cylinder's pair agrees with every other
    assert mixed < rigid / 2


def test_geometry_reranks_the_vote_and_off_it_does_not() -> None:
    """`_consistent`: among the vote's first fingers, the one whose pairs agree comes first even
    though the vote put it below; ties of the geometry follow the vote. With `consistency_share`
    None the first stage is the vote alone."""
    rng = np.random.default_rng(5)
    live_xy = [(float(x), float(y)) for x, y in rng.integers(50, 450, size=(10, 2))]
    live_theta = rng.integers(0, 256, size=10).tolist()
    good = _finger(0, live_xy, live_theta, turn=20, shift=(10, -5))[:6]  # 6 pairs that agree
    bad = [
        Pair(1, i, i, int(x), int(y), int(t), 4096)  # 10 pairs, positions at random
        for i, (x, y, t) in enumerate(
            zip(rng.integers(0, 500, 10), rng.integers(0, 500, 10), live_theta, strict=True)
        )
    ]
    pairs = good + bad
    fingers = 2
    votes = _votes(pairs, live_theta, fingers)
    vote = identification._windows(votes.reshape(BINS, fingers), WINDOW)
    assert vote[1] > vote[0]  # the vote prefers the scattered finger
    found = identification._Found.room(len(pairs))
    found.label[:] = [_label(p) for p in pairs]
    found.live[:] = [p.live for p in pairs]
    found.weight[:] = [p.weight for p in pairs]
    found.count = len(pairs)
    g = identification.Gallery(params=IndexParams(pair_distance=DISTANCE, pair_angle=ANGLE))
    probe = type(
        "Probe", (), {"x": np.array([x for x, _ in live_xy]), "y": np.array([y for _, y in live_xy])}
    )
    top = np.array([1, 0], dtype=np.int64)  # the vote's order
    start = _starts(pairs, live_theta, fingers)
    ranked = g._consistent(probe, np.array(live_theta, dtype=np.int64), start, found, top, vote, 2)  # type: ignore[arg-type]
    assert ranked.tolist() == [0, 1]
    assert IndexParams(consistency_share=None).checked(100_000) == 0
    assert IndexParams().checked(100_000) == 20_000


def test_a_gallery_refuses_more_fingers_than_a_label_can_number(monkeypatch: pytest.MonkeyPatch) -> None:
    """A row's label holds its finger slot in the bits above `SLOT_SHIFT`; a gallery that would
    number more fingers than fit refuses the batch whole instead of corrupting labels. With the
    shift at 60, 8 slots fit."""
    from idguard.biometrics import build_template
    from idguard.biometrics.synthetic import Difficulty, impression, master_finger

    monkeypatch.setattr(identification, "SLOT_SHIFT", 60)
    t = build_template(impression(master_finger(2026, 0), 0, Difficulty.MEDIUM, seed=2026))
    g = identification.Gallery()
    g.add_stored_many((f"k{f}", t.to_bytes()) for f in range(8))
    with pytest.raises(RuntimeError, match="at most 2\\^3 fingers"):
        g.add_stored_many([("k8", t.to_bytes())])
    assert len(g) == 8
    assert all(int(seg.by_list.min()) >= 0 for seg in g._state.segments)


@settings(max_examples=80, deadline=None)
@given(
    scores=st.lists(st.integers(-3, 40), min_size=1, max_size=300),
    count=st.integers(1, 320),
)
def test_the_fingers_the_geometry_checks_are_the_votes_first(scores: list[int], count: int) -> None:
    """`_chosen` (the set the geometry ranks again) holds exactly the fingers `_top` ranks first,
    ties at the cut included, in slot order; no finger without a vote."""
    score = np.array(scores, dtype=np.int32)
    chosen = identification._chosen(score, count)
    assert chosen.tolist() == sorted(identification._top(score, count).tolist())
    assert (score[chosen] > 0).all()


@settings(max_examples=200, deadline=None)
@given(_cases())
def test_the_second_stage_scores_its_own_pairs_by_the_same_rule(
    case: tuple[list[Pair], list[tuple[int, int]], list[int], list[int]],
) -> None:
    """Stage 2's geometry (`Gallery._pair_geometry`, issue 10's eleventh round): its exact pairs of
    the shortlisted fingers, weighed from their inner products as the first stage weighs its own
    (the bar at `rescore_similarity`), scored by the rule above, each finger by its place in the
    shortlist."""
    pairs, live_xy, live_theta, named = case
    params = IndexParams(pair_distance=DISTANCE, pair_angle=ANGLE, pair_rotation=ROTATION * 360 / 256)
    bar = identification._min_product(params.rescore_similarity)
    table = identification._weights(params.rescore_similarity, params.vote_slope)
    short = sorted(named)
    # each pair's product drawn from its weight; the reference sees the weight the table gives it
    product = [bar + 1 + p.weight % (scan.MAX_PRODUCT + 200 - bar) for p in pairs if p.finger in short]
    mine = [
        Pair(p.finger, p.live, p.reg, p.reg_x, p.reg_y, p.reg_theta, int(table[min(q - bar, table.size - 1)]))
        for p, q in zip([p for p in pairs if p.finger in short], product, strict=True)
    ]
    assume(mine)
    want, close = _reference(mine, live_xy, live_theta, short)
    assume(not close)
    g = identification.Gallery(params=params)
    state = SimpleNamespace(alive=np.ones(max(short + [p.finger for p in pairs]) + 1, dtype=bool))
    step = 2 * math.pi / 256
    probe = SimpleNamespace(
        x=np.array([x for x, _ in live_xy], dtype=np.float32),
        y=np.array([y for _, y in live_xy], dtype=np.float32),
        theta=np.array(live_theta, dtype=np.float64) * step,
    )
    got = g._pair_geometry(
        state,  # type: ignore[arg-type]
        probe,  # type: ignore[arg-type]
        np.array(short, dtype=np.int64),
        np.array([_label(p) for p in mine], dtype=np.int64),
        np.array([p.live for p in mine], dtype=np.int64),
        np.array([short.index(p.finger) for p in mine], dtype=np.int64),
        np.array(product, dtype=np.int32),
    )
    assert got.tolist() == want
