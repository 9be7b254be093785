"""Sealing small records at rest (AES-256-GCM): what must be kept for a while but never in the
clear, such as the stored answer of an idempotent write (`Sealer`, one key), and personal data
(`KeyRing`: names, addresses, finders' contacts, under IDGUARD_DATA_KEYS; registry/sealed.py).
`context` is authenticated with the ciphertext, so a sealed value copied onto another row does
not open."""

from __future__ import annotations

import base64
import binascii
import functools
import os
import uuid
import weakref
from collections.abc import Callable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

NONCE_BYTES = 12


class SealError(Exception):
    """A sealed value that does not open: another key, another context, or altered."""


class Sealer:
    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("a sealing key has 32 bytes")
        self._aead = AESGCM(key)

    def seal(self, plaintext: str, *, context: str) -> str:
        nonce = os.urandom(NONCE_BYTES)
        sealed = nonce + self._aead.encrypt(nonce, plaintext.encode(), context.encode())
        return base64.b64encode(sealed).decode()

    def open(self, sealed: str, *, context: str) -> str:
        try:
            raw = base64.b64decode(sealed, validate=True)
            return self._aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], context.encode()).decode()
        except (InvalidTag, binascii.Error, ValueError) as exc:
            raise SealError("a sealed value does not open") from exc


class KeyRingError(SealError):
    """Sealed personal data that cannot be opened: its key is not configured, or the configured key
    of that id is another one, or the value was altered or copied from another row. The message
    names the key id and the setting, never the value."""


class KeyRing:
    """Personal data at rest (issue 16): AES-256-GCM under a ring of keys, `key_id -> key` in
    order, the first sealing and every one opening, so keys rotate without a flag day (put the new
    key first, `idguard keys rekey`, then drop the old one).

    Unlike `Sealer` (one key, text out) the ring returns raw bytes, `nonce || ciphertext || tag`,
    for a binary column, and the caller keeps the key id beside them (one per row). `context`
    binds a value to its place (table, column, row id): a ciphertext copied onto another row, or
    into another column of the same row, fails to open instead of showing the wrong person's data.
    """

    __slots__ = ("_ciphers", "active_key_id", "setting")

    def __init__(self, keys: dict[str, bytes], *, setting: str = "IDGUARD_DATA_KEYS") -> None:
        if not keys:
            raise ValueError(f"{setting}: the key ring needs at least one key")
        for key_id, key in keys.items():
            if len(key) != 32:
                raise ValueError(f"{setting} key {key_id!r} has {len(key)} bytes, needs 32")
        self._ciphers = {key_id: AESGCM(key) for key_id, key in keys.items()}
        self.active_key_id = next(iter(keys))
        self.setting = setting

    @property
    def key_ids(self) -> tuple[str, ...]:
        return tuple(self._ciphers)

    def seal(self, plaintext: str, *, context: bytes) -> bytes:
        """Under the active key (`active_key_id`, to be stored beside the result)."""
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._ciphers[self.active_key_id].encrypt(nonce, plaintext.encode(), context)

    def open(self, key_id: str, sealed: bytes, *, context: bytes) -> str:
        """The clear text, or KeyRingError: never a guess, never garbage."""
        return self.opener(key_id)(sealed, context)

    def opener(self, key_id: str) -> Callable[[bytes, bytes], str]:
        """`open` for one key id, as a function of (sealed, context): for a loop over many rows
        (the verification index opens every card's name when it is built)."""
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise KeyRingError(
                f"personal data sealed under key {key_id!r} cannot be opened: that key is not in "
                f"{self.setting} (configured: {', '.join(self._ciphers)})"
            )
        decrypt, setting = cipher.decrypt, self.setting

        def open_one(sealed: bytes, context: bytes) -> str:
            if len(sealed) < NONCE_BYTES + 16:  # a nonce and a tag at the least
                raise KeyRingError(f"a value sealed under key {key_id!r} is truncated")
            try:
                return decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], context).decode()
            except InvalidTag:
                raise KeyRingError(
                    f"a value sealed under key {key_id!r} failed authentication: {setting} holds "
                    "another key under that id, or the value was altered or moved from another row"
                ) from None

        return open_one


@functools.cache
def context_prefix(table: str, column: str) -> bytes:
    return f"{table}/{column}/".encode()


def sealing_context(table: str, column: str, row_id: object) -> bytes:
    """The associated data of one sealed value: where it belongs, `persons/name/` and the row id
    (a UUID's 16 bytes, any other id as text). Cheap: the index build makes one per card."""
    key = row_id.bytes if isinstance(row_id, uuid.UUID) else str(row_id).encode()
    return context_prefix(table, column) + key


# Which key ring seals the personal data of which database: the engine is made from settings
# (db.engine.make_engine) and its ring rides along, so every session, migration and command on
# that engine seals with the configured keys and no module keeps a default secret.
_RINGS: weakref.WeakKeyDictionary[object, KeyRing] = weakref.WeakKeyDictionary()


def attach(owner: object, ring: KeyRing) -> None:
    _RINGS[owner] = ring


def ring_for(owner: object) -> KeyRing | None:
    return _RINGS.get(owner)
