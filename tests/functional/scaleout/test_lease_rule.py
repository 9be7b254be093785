"""The lease rule of a verifier node against the writer's give-up rule, on every schedule
(docs/scaling.md, "The node's cut-off"): no NATS, the node's own code (NodeFollower.calibrate,
.grant, .beat, .stale) and the writer's (propagation.give_up_at) driven through random timings of
lease requests and the relay's replies, the relay's beats, lost or late deliveries, a relay clock
with its own origin and a rate off by up to RATE_ERROR, and a write whose seq never reaches the
node. The property: once a writer has given up on the node, the node either refuses (its lease
ran out) or knows it is behind the seq (the guard then waits or refuses): it never answers from
an index without it. Time below is real time, which the writer's and the node's monotonic clocks
both read (the same rate: the node's is the reference; the relay's differs)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from idguard.scaleout.compact import CompactIndex
from idguard.scaleout.node import RATE_ERROR, NodeFollower
from idguard.scaleout.propagation import give_up_at
from idguard.verification.runtime.keyring import KeyRing

SEQ = 10  # the write's seq; the node has applied everything before it
_delay = st.floats(min_value=1e-4, max_value=0.5)
_moment = st.floats(min_value=0, max_value=3)


def node(bound: float) -> NodeFollower:
    follower = NodeFollower(CompactIndex(b"k" * 32), KeyRing(), bound)
    follower.seq = follower.head = SEQ - 1
    return follower


def answers_without_the_seq(follower: NodeFollower, now: float) -> bool:
    """Whether the node's guard would answer from its index now (scaleout/node.py StaleGuard)."""
    return follower.stale(now) is None and follower.behind_since is None


@st.composite
def schedules(draw: st.DrawFn) -> dict[str, object]:
    origin = draw(st.floats(min_value=-1e6, max_value=1e6))
    rate = draw(st.floats(min_value=-RATE_ERROR, max_value=RATE_ERROR))
    events: list[tuple[float, str, float | None, float]] = []  # (delivered, kind, asked, stamped)
    for asked in draw(st.lists(_moment, min_size=1, max_size=20)):
        stamped = asked + draw(_delay)  # the relay stamps its reply after the request left
        delivered = stamped + draw(_delay)
        if draw(st.booleans()) or not events:  # else lost
            events.append((delivered, "reply", asked, stamped))
    for stamped in draw(st.lists(_moment, max_size=40)):
        if draw(st.booleans()):  # delivered (else lost)
            events.append((stamped + draw(_delay), "beat", None, stamped))
    started = draw(_moment)
    recorded = started + draw(_delay)  # the relay publishes the writer's seq...
    acked = recorded + draw(_delay)  # ...then acknowledges it; the writer hears that later
    return {
        "relay_clock": lambda t: origin + t * (1 + rate),
        "bound": draw(st.floats(min_value=0.02, max_value=1.0)),
        "lease": draw(st.floats(min_value=0.0, max_value=2.0)),  # the relay's (any setting)
        "events": sorted(events, key=lambda e: e[0]),
        "started": started,
        "recorded": recorded,
        "acked": acked,
        "asked_after": draw(st.floats(min_value=0, max_value=2.0)),
    }


@given(schedules())
def test_once_the_writer_gives_up_the_node_never_answers_from_an_index_without_the_seq(
    s: dict[str, object],
) -> None:
    relay_clock = s["relay_clock"]
    assert callable(relay_clock)
    bound, lease = float(s["bound"]), float(s["lease"])  # type: ignore[arg-type]
    started, recorded, acked = float(s["started"]), float(s["recorded"]), float(s["acked"])  # type: ignore[arg-type]
    gave_up = give_up_at(started, bound, (acked, lease))
    assert gave_up >= started + bound
    query = gave_up + float(s["asked_after"])  # type: ignore[arg-type]
    follower = node(bound)
    events: list[tuple[float, str, float | None, float]] = s["events"]  # type: ignore[assignment]
    for delivered, kind, asked, stamped in events:
        if delivered > query:
            break
        known = SEQ if stamped >= recorded else SEQ - 1  # published before the stamp: named
        at = relay_clock(stamped)
        if kind == "reply":
            assert asked is not None
            follower.calibrate("relay", asked, at)
            follower.grant(asked, SEQ - 1, known, lease, delivered)
        else:
            follower.beat("relay", at, SEQ - 1, known, lease, delivered)
    assert not answers_without_the_seq(follower, query)


def test_a_lease_counted_from_the_reply_s_arrival_would_let_a_late_reply_outlive_the_writer() -> None:
    """Why the lease counts from the request (or the stamp), not from the arrival: a reply or
    beat the relay sent before it recorded the seq, delivered late, would otherwise extend the
    node past the writer."""
    bound = lease = 0.25
    asked, stamped, delivered = 0.0, 0.001, 0.2  # a slow delivery
    recorded, acked = 0.002, 0.003
    gave_up = give_up_at(0.0, bound, (acked, lease))
    follower = node(bound)
    follower.grant(asked, SEQ - 1, SEQ - 1, lease, delivered)
    assert follower.stale(gave_up) is not None  # the rule: refuses when the writer answers
    receipt_counted = node(bound)
    receipt_counted.grant(delivered, SEQ - 1, SEQ - 1, lease, delivered)
    assert answers_without_the_seq(receipt_counted, gave_up)  # the other rule would answer
    assert stamped < recorded < acked


def test_a_beat_grants_nothing_until_the_relay_s_clock_is_read_and_then_from_its_stamp() -> None:
    follower = node(0.25)
    assert not follower.beat("relay", 1000.0, SEQ - 1, SEQ - 1, 0.25, 5.0)
    assert follower.stale(5.0) is not None
    follower.calibrate("relay", 5.0, 1000.01)  # asked at 5.0 (ours), stamped 1000.01 (its)
    assert follower.beat("relay", 1000.11, SEQ - 1, SEQ - 1, 0.25, 5.2)  # 0.1 s later on its clock
    # Granted from our 5.1 at the latest (5.0 + 0.1 less the rate allowance), not from 5.2.
    assert follower.lease_until == pytest.approx(5.1 + 0.25, abs=1e-3)
    assert follower.lease_until <= 5.1 + 0.25
    assert follower.stale(5.35) is not None
    # Another relay's beat (a takeover) needs its own reading.
    assert not follower.beat("other", 7.0, SEQ - 1, SEQ - 1, 0.25, 5.3)


def test_without_the_relay_s_acknowledgement_the_writer_still_waits_its_whole_bound() -> None:
    assert give_up_at(5.0, 0.25, None) == 5.25
    assert give_up_at(5.0, 0.25, (5.001, 0.1)) == pytest.approx(5.251)  # its bound after the ack
    assert give_up_at(5.0, 0.1, (5.001, 0.25)) == pytest.approx(5.251)  # never under the lease
