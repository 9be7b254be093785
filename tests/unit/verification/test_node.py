"""The node's shared directory: live members, publishing, confirmation, wake-ups, dead workers."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Iterator
from multiprocessing.connection import Connection
from pathlib import Path

import pytest

from idguard.verification.runtime.node import Node

_FORK = multiprocessing.get_context("fork")


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    node = Node(tmp_path / "node")
    yield node
    node.close()


def _worker(directory: Path, pipe: Connection, apply: bool) -> None:
    """A member in another process: applies what it is woken for (when `apply`), until told to stop."""
    node = Node(directory)
    member = node.join()
    pipe.send("joined")
    while not pipe.poll():
        if member.wait(0.05) and apply:
            member.applied(*node.required())
    member.leave()


def _spawn(node: Node, *, apply: bool = True) -> tuple[multiprocessing.process.BaseProcess, Connection]:
    parent, child = _FORK.Pipe()
    proc = _FORK.Process(target=_worker, args=(node.directory, child, apply), daemon=True)
    proc.start()
    assert parent.recv() == "joined"
    return proc, parent


def test_required_only_rises(node: Node) -> None:
    assert node.required() == (0, 0)
    node.publish(7)
    node.publish(3)  # a slower writer of an older event never lowers it
    assert node.required() == (7, 0)
    assert Node(node.directory).required() == (7, 0)  # the same memory in another handle
    node.publish(5, units=2)  # a unit's change raises the units version only
    assert node.required() == (7, 2)
    assert node.generation() == 3  # but every publish is a new generation


def test_a_published_change_is_confirmed_by_every_live_worker(node: Node) -> None:
    workers = [_spawn(node) for _ in range(3)]
    try:
        node.publish(42)
        propagation = node.confirm(42, timeout=5)
        assert (propagation.workers, propagation.confirmed) == (3, 3)
        assert propagation.ms < 5000
    finally:
        for proc, pipe in workers:
            pipe.send("stop")
            proc.join(5)


def test_a_worker_that_does_not_apply_is_reported_after_the_bound(node: Node) -> None:
    applying, stuck = _spawn(node), _spawn(node, apply=False)
    try:
        node.publish(5)
        started = time.monotonic()
        propagation = node.confirm(5, timeout=0.2)
        assert 0.2 <= time.monotonic() - started < 2
        assert (propagation.workers, propagation.confirmed) == (2, 1)
    finally:
        for proc, pipe in (applying, stuck):
            pipe.send("stop")
            proc.join(5)


def test_a_killed_worker_leaves_the_live_set_at_once(node: Node) -> None:
    proc, _pipe = _spawn(node, apply=False)
    assert len(node._live()) == 1
    assert proc.pid is not None
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(5)
    node.publish(9)
    propagation = node.confirm(9, timeout=5)
    assert (propagation.workers, propagation.confirmed) == (0, 0)
    assert propagation.ms < 100  # nothing to wait for: no bound spent on the dead
    assert not any(p for p in (node.directory / "members").iterdir() if not p.name.startswith("."))


def test_a_stopped_worker_holds_its_place_but_does_not_block_the_writer(node: Node) -> None:
    proc, pipe = _spawn(node)
    assert proc.pid is not None
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        node.publish(11)
        propagation = node.confirm(11, timeout=0.1)
        assert (propagation.workers, propagation.confirmed) == (1, 0)
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    assert node.confirm(11, timeout=5).confirmed == 1  # resumed, it was woken and caught up
    pipe.send("stop")
    proc.join(5)


def test_publish_wakes_a_member_before_its_poll_interval(node: Node) -> None:
    member = node.join()
    woken: list[float] = []

    def sleeper() -> None:
        started = time.monotonic()
        if member.wait(10):
            woken.append(time.monotonic() - started)

    thread = threading.Thread(target=sleeper)
    thread.start()
    time.sleep(0.05)
    node.publish(1)
    thread.join(5)
    member.leave()
    assert len(woken) == 1
    assert woken[0] < 5  # woken by the publish, not by the 10 s timeout


def test_the_members_own_wake_ends_its_wait(node: Node) -> None:
    member = node.join()
    member.wake()
    assert member.wait(5)
    assert not member.wait(0)  # drained
    member.leave()


def test_a_unit_change_is_confirmed_only_by_members_that_reloaded_the_units(node: Node) -> None:
    """A suspension moves the units version, not the ledger: a member that has applied the
    ledger but not the new units version has not confirmed."""
    member = node.join()
    try:
        member.applied(10, 1)
        node.publish(10, units=2)
        assert node.confirm(10, 2, timeout=0.05).confirmed == 0
        member.applied(10, 2)
        assert node.confirm(10, 2, timeout=5).confirmed == 1
        assert node.confirm(9, 1, timeout=5).confirmed == 1  # an older position is reached too
    finally:
        member.leave()
