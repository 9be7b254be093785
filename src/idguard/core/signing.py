"""Ed25519 key rings from configuration: what loss declarations and offline sets are signed with.

A setting such as IDGUARD_DECLARATION_KEYS or IDGUARD_OFFLINE_KEYS holds
"key_id:base64-of-32-byte-seed,…": the first key signs, every listed key verifies and is
published (keep a retired key listed until nothing it signed is still in use). Development and
test derive one key from the service secret when the setting is unset; production refuses to start
without it. Errors name the setting and the entry, never a key's bytes.

Pure: only `cryptography`.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

SEED_BYTES = 32
DEVELOPMENT_KEY_ID = "dev1"
_KEY_ID = re.compile(r"[A-Za-z0-9_.-]{1,16}")


def parse_keys(text: str, *, setting: str) -> dict[str, bytes]:
    """ "id:base64seed,id:base64seed" -> {id: seed}, in order (the first signs). ValueError names
    `setting` and the bad entry."""
    keys: dict[str, bytes] = {}
    for n, item in enumerate(part.strip() for part in text.split(",")):
        key_id, sep, encoded = item.partition(":")
        if not sep or not _KEY_ID.fullmatch(key_id):
            raise ValueError(
                f"{setting} entry {n + 1}: expected key_id:base64 (id of 1-16 of A-Z a-z 0-9 _ . -)"
            )
        try:
            seed = base64.b64decode(encoded, validate=True)
        except binascii.Error:
            raise ValueError(f"{setting} key {key_id!r} is not valid base64") from None
        if len(seed) != SEED_BYTES:
            raise ValueError(f"{setting} key {key_id!r} has {len(seed)} bytes, needs {SEED_BYTES}")
        if key_id in keys:
            raise ValueError(f"{setting} lists key id {key_id!r} twice")
        keys[key_id] = seed
    return keys


@dataclass(frozen=True, slots=True)
class PublicKey:
    key_id: str
    public_key: str  # base64 of the raw 32-byte Ed25519 public key
    signing: bool  # the key new signatures are made with


class KeyRing:
    """The configured keys: the first signs, all verify and are published."""

    def __init__(self, seeds: Mapping[str, bytes]) -> None:
        if not seeds:
            raise ValueError("at least one signing key is needed")
        self._private = {k: Ed25519PrivateKey.from_private_bytes(s) for k, s in seeds.items()}
        self.signing_key_id = next(iter(self._private))

    @classmethod
    def from_config(cls, configured: str | None, *, setting: str, development_seed: bytes) -> KeyRing:
        """From the setting's text, or (unset: development and test only, which the settings
        enforce) one key derived from the service secret."""
        if configured is None:
            return cls({DEVELOPMENT_KEY_ID: development_seed})
        return cls(parse_keys(configured, setting=setting))

    def sign(self, data: bytes) -> bytes:
        return self._private[self.signing_key_id].sign(data)

    def public_key(self, key_id: str) -> Ed25519PublicKey | None:
        key = self._private.get(key_id)
        return None if key is None else key.public_key()

    def public(self) -> list[PublicKey]:
        return [
            PublicKey(key_id, encode_public(key.public_key()), key_id == self.signing_key_id)
            for key_id, key in self._private.items()
        ]


def encode_public(key: Ed25519PublicKey) -> str:
    return base64.b64encode(key.public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()


def verifies(public_key: Ed25519PublicKey | str, signature: bytes, data: bytes) -> bool:
    """Whether `signature` is `data` signed by `public_key` (a key, or its base64 as published)."""
    try:
        key = (
            Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key, validate=True))
            if isinstance(public_key, str)
            else public_key
        )
        key.verify(signature, data)
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True
