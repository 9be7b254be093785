"""The answering processes of one node, and how a write reaches all of them before it is answered.

A node is the set of worker processes that serve one database from one machine (`idguard serve
--workers N`; the CLI on that machine too). They share a directory (settings.node_dir):

    required        the highest ledger sequence number a write has published (8 bytes)
    members/<id>    one file per live worker: the sequence number its index has applied (8
                    bytes), held under an exclusive flock for as long as the worker lives

A write that changes an answer (registry/ledger.py appended an event) is, once committed,
*published*: `required` is raised to its sequence number, and every live member is woken at once
through its datagram socket (an abstract Unix socket named after the directory and the member),
so its follower reads the ledger now instead of at its next poll. The writer then waits until
every live member's file says it has applied that number, up to a bound; the answer tells how
many confirmed (`Propagation`).

A member is live while its flock is held: the kernel releases it the moment the process dies
(kill -9 included), so a crashed worker drops out of the live set at once and never blocks a
write. A worker that is alive but stopped (SIGSTOP, a long pause) holds its lock and does not
confirm: the writer stops waiting at the bound. That worker cannot answer from the old state when
it resumes: before each answer a worker compares `required` (a read of shared memory) with what
it has applied, and catches up first (verification/verifier.py) — or answers 503 if it cannot.

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


@dataclass(frozen=True, slots=True)
class Propagation:
    """How far a published change had reached when the writer answered."""

    workers: int  # live members of the node
    confirmed: int  # of them, those whose index had applied it
    ms: float  # how long the writer waited

    def as_dict(self) -> dict[str, int | float]:
        return {"workers": self.workers, "confirmed": self.confirmed, "ms": round(self.ms, 1)}


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
            if os.fstat(fd).st_size < _SEQ.size:
                fcntl.flock(fd, fcntl.LOCK_EX)
                try:
                    if os.fstat(fd).st_size < _SEQ.size:
                        os.pwrite(fd, _SEQ.pack(0), 0)
                finally:
                    fcntl.flock(fd, fcntl.LOCK_UN)
            self._required_fd = fd
            self._required = mmap.mmap(fd, _SEQ.size, mmap.MAP_SHARED, mmap.PROT_READ)
        except BaseException:
            os.close(fd)
            raise

    def address(self, member: str) -> bytes:
        """The member's wake-up socket: abstract (no file), unique to this directory."""
        return f"\0idguard-{self._tag}-{member}".encode()

    # -- what every answer reads ---------------------------------------------------------------

    def required(self) -> int:
        """The highest sequence number published on this node (one read of shared memory)."""
        return int(_SEQ.unpack_from(self._required, 0)[0])

    # -- the writer's side ------------------------------------------------------------------------

    def publish(self, seq: int) -> None:
        """Raise `required` to `seq` and wake every live member."""
        fcntl.flock(self._required_fd, fcntl.LOCK_EX)
        try:
            current = _SEQ.unpack(os.pread(self._required_fd, _SEQ.size, 0))[0]
            if seq > current:
                os.pwrite(self._required_fd, _SEQ.pack(seq), 0)
        finally:
            fcntl.flock(self._required_fd, fcntl.LOCK_UN)
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
            sender.setblocking(False)
            for member in self._live():
                with contextlib.suppress(OSError):  # gone meanwhile, or its queue full: it polls anyway
                    sender.sendto(_SEQ.pack(seq), self.address(member))

    def confirm(self, seq: int, *, timeout: float) -> Propagation:
        """Wait until every live member has applied `seq`, or `timeout` seconds have passed."""
        started = time.monotonic()
        while True:
            members = self._live()
            confirmed = sum(1 for m in members if self._applied(m) >= seq)
            elapsed = time.monotonic() - started
            if confirmed >= len(members) or elapsed >= timeout:
                if confirmed < len(members):
                    log.warning(
                        "%d of %d workers had not applied ledger seq %d after %.0f ms",
                        len(members) - confirmed,
                        len(members),
                        seq,
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

    def _applied(self, member: str) -> int:
        try:
            with open(self.members_dir / member, "rb") as f:
                data = f.read(_SEQ.size)
        except FileNotFoundError:
            return 0
        return int(_SEQ.unpack(data)[0]) if len(data) == _SEQ.size else 0

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
            os.pwrite(fd, _SEQ.pack(0), 0)
            os.rename(tmp, node.members_dir / self.id)  # appears already locked
            self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self.socket.bind(node.address(self.id))
            self.socket.setblocking(False)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def applied(self, seq: int) -> None:
        """Say that this worker's index has applied everything up to `seq`."""
        os.pwrite(self._fd, _SEQ.pack(seq), 0)

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
