"""The answering processes of one node, and how a write reaches all of them before it is answered.

A node is the set of worker processes that serve one database from one machine (`idguard serve
--workers N`). They share a directory (settings.node_dir):

    required        how many writes have been published (the generation), and the highest
                    position published: a ledger sequence number and a units version (unit
                    keys, suspensions); 8 bytes each
    members/<id>    one file per live worker: the position its index and key ring have applied
                    (16 bytes), held under an exclusive flock for as long as the worker lives

A write that changes an answer (registry/ledger.py appended an event, or verification/units.py
changed a unit) is, once committed, *published*: `required` is raised to its position, and every live member is woken at once
through its datagram socket (an abstract Unix socket named after the directory and the member),
so its follower reads the ledger now instead of at its next poll. The writer then waits until
every live member's file says it has applied that number, up to a bound; the answer tells how
many confirmed (`Propagation`).

A member is live while its flock is held: the kernel releases it the moment the process dies
(kill -9 included), so a crashed worker drops out of the live set at once and never blocks a
write. A worker that is alive but stopped (SIGSTOP, a long pause) holds its lock and does not
confirm: the writer stops waiting at the bound. That worker cannot answer from the old state when
it resumes: before each answer a worker compares the generation (a read of shared memory) with
the one it last caught up with, and catches up first (runtime/follower.py `current`) — or
answers 503 if it cannot. The generation, not the position, decides: a database that was
recreated restarts its sequence numbers below what an earlier run published.

Linux: abstract socket names and flock. Nothing here touches the database.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import mmap
import os
import secrets
import select
import socket
import struct
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("idguard.node")

_SEQ = struct.Struct("<Q")
_POSITION = struct.Struct("<QQ")  # ledger seq, units version
_REQUIRED = struct.Struct("<QQQ")  # generation, ledger seq, units version


@dataclass(frozen=True, slots=True)
class Propagation:
    """How far a published change had reached when the writer answered."""

    workers: int  # live members of the node
    confirmed: int  # of them, those whose index had applied it
    ms: float  # how long the writer waited

    def as_dict(self) -> dict[str, int | float]:
        return {"workers": self.workers, "confirmed": self.confirmed, "ms": round(self.ms, 1)}


def _reached(applied: tuple[int, int], seq: int, units: int) -> bool:
    return applied[0] >= seq and applied[1] >= units


class Node:
    """The shared directory of one node: what writers and members both use."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.members_dir = directory / "members"
        self.members_dir.mkdir(parents=True, exist_ok=True)
        self._tag = hashlib.sha256(str(directory.resolve()).encode()).hexdigest()[:16]
        path = directory / "required"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            if os.fstat(fd).st_size < _REQUIRED.size:
                fcntl.flock(fd, fcntl.LOCK_EX)
                try:
                    if os.fstat(fd).st_size < _REQUIRED.size:
                        os.pwrite(fd, _REQUIRED.pack(0, 0, 0), 0)
                finally:
                    fcntl.flock(fd, fcntl.LOCK_UN)
            self._required_fd = fd
            self._required = mmap.mmap(fd, _REQUIRED.size, mmap.MAP_SHARED, mmap.PROT_READ)
        except BaseException:
            os.close(fd)
            raise

    def address(self, member: str) -> bytes:
        """The member's wake-up socket: abstract (no file), unique to this directory."""
        return f"\0idguard-{self._tag}-{member}".encode()

    # -- what every answer reads ---------------------------------------------------------------

    def required(self) -> tuple[int, int]:
        """The highest position published on this node: (ledger seq, units version), one read of
        shared memory."""
        _, seq, units = _REQUIRED.unpack_from(self._required, 0)
        return seq, units

    def generation(self) -> int:
        """How many writes have been published on this node (one read of shared memory)."""
        return int(_SEQ.unpack_from(self._required, 0)[0])

    # -- the writer's side ------------------------------------------------------------------------

    def publish(self, seq: int, units: int = 0) -> None:
        """Count a new generation, raise `required` to (`seq`, `units`), wake every live member."""
        fcntl.flock(self._required_fd, fcntl.LOCK_EX)
        try:
            generation, now_seq, now_units = _REQUIRED.unpack(os.pread(self._required_fd, _REQUIRED.size, 0))
            os.pwrite(
                self._required_fd, _REQUIRED.pack(generation + 1, max(seq, now_seq), max(units, now_units)), 0
            )
        finally:
            fcntl.flock(self._required_fd, fcntl.LOCK_UN)
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
            sender.setblocking(False)
            for member in self._live():
                with contextlib.suppress(OSError):  # gone meanwhile, or its queue full: it polls anyway
                    sender.sendto(_SEQ.pack(seq), self.address(member))

    def confirm(self, seq: int, units: int = 0, *, timeout: float) -> Propagation:
        """Wait until every live member has applied (`seq`, `units`), or `timeout` seconds have
        passed."""
        started = time.monotonic()
        while True:
            members = self._live()
            confirmed = sum(1 for m in members if _reached(self._applied(m), seq, units))
            elapsed = time.monotonic() - started
            if confirmed >= len(members) or elapsed >= timeout:
                if confirmed < len(members):
                    log.warning(
                        "%d of %d workers had not applied ledger seq %d, units version %d after %.0f ms",
                        len(members) - confirmed,
                        len(members),
                        seq,
                        units,
                        elapsed * 1000,
                    )
                return Propagation(len(members), confirmed, elapsed * 1000)
            time.sleep(0.0005)

    def _live(self) -> list[str]:
        """The members whose process holds its file's lock; a file whose lock can be taken is a
        dead worker's and is removed."""
        live = []
        for path in self.members_dir.iterdir():
            if path.name.startswith("."):
                continue
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                live.append(path.name)  # held: its worker is alive
            else:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            finally:
                os.close(fd)
        return live

    def _applied(self, member: str) -> tuple[int, int]:
        try:
            with open(self.members_dir / member, "rb") as f:
                data = f.read(_POSITION.size)
        except FileNotFoundError:
            return 0, 0
        if len(data) != _POSITION.size:
            return 0, 0
        seq, units = _POSITION.unpack(data)
        return seq, units

    def join(self) -> Member:
        return Member(self)

    def close(self) -> None:
        self._required.close()
        os.close(self._required_fd)


class Member:
    """One worker's presence: its applied sequence number, and the socket it is woken on."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.id = f"{os.getpid()}-{secrets.token_hex(4)}"
        tmp = node.members_dir / f".{self.id}"
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.pwrite(fd, _POSITION.pack(0, 0), 0)
            os.rename(tmp, node.members_dir / self.id)  # appears already locked
            self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self.socket.bind(node.address(self.id))
            self.socket.setblocking(False)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def applied(self, seq: int, units: int = 0) -> None:
        """Say that this worker has applied the ledger up to `seq` and the units up to version
        `units`."""
        os.pwrite(self._fd, _POSITION.pack(seq, units), 0)

    def wait(self, timeout: float) -> bool:
        """Sleep until woken by a publish or `timeout` seconds; True when woken."""
        ready, _, _ = select.select([self.socket], [], [], timeout)
        if not ready:
            return False
        with contextlib.suppress(BlockingIOError):
            while self.socket.recv(64):
                pass
        return True

    def wake(self) -> None:
        """Wake this member's own wait (to stop it)."""
        with contextlib.suppress(OSError):
            self.socket.sendto(b"\0" * _SEQ.size, self.node.address(self.id))

    def leave(self) -> None:
        self.socket.close()
        with contextlib.suppress(FileNotFoundError):
            (self.node.members_dir / self.id).unlink()
        os.close(self._fd)
