"""Signing loss declarations (遗失声明): Ed25519 keys from configuration and the canonical bytes.

The signed bytes of a declaration are its public JSON object without `signature`, serialised
canonically: keys sorted, no whitespace (separators "," and ":"), non-ASCII characters as
themselves, UTF-8:

    json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")

`key_id` is one of those fields, so a signature cannot be moved to another key. Anyone checks a
declaration offline with the public key listed at GET /api/v1/declarations/keys (docs/citizens.md
has a 20-line script). Keys rotate by putting a new key first in IDGUARD_DECLARATION_KEYS; the
retired ones stay listed (they verify, never sign), so old declarations stay verifiable.

No database, no web framework: only `cryptography`.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

SEED_BYTES = 32
DEVELOPMENT_KEY_ID = "dev1"
_KEY_ID = re.compile(r"[A-Za-z0-9_.-]{1,16}")


def canonical(fields: Mapping[str, Any]) -> bytes:
    """The bytes a declaration's signature covers: every field but `signature`."""
    signed = {k: v for k, v in fields.items() if k != "signature"}
    return json.dumps(signed, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def parse_keys(text: str) -> dict[str, bytes]:
    """ "id:base64seed,id:base64seed" -> {id: seed}, in order (the first signs). ValueError names
    the bad entry, never a key's bytes."""
    keys: dict[str, bytes] = {}
    for n, item in enumerate(part.strip() for part in text.split(",")):
        key_id, sep, encoded = item.partition(":")
        if not sep or not _KEY_ID.fullmatch(key_id):
            raise ValueError(
                f"IDGUARD_DECLARATION_KEYS entry {n + 1}: expected key_id:base64 (id of 1-16 of A-Z a-z 0-9 _ . -)"
            )
        try:
            seed = base64.b64decode(encoded, validate=True)
        except binascii.Error:
            raise ValueError(f"IDGUARD_DECLARATION_KEYS key {key_id!r} is not valid base64") from None
        if len(seed) != SEED_BYTES:
            raise ValueError(
                f"IDGUARD_DECLARATION_KEYS key {key_id!r} has {len(seed)} bytes, needs {SEED_BYTES}"
            )
        if key_id in keys:
            raise ValueError(f"IDGUARD_DECLARATION_KEYS lists key id {key_id!r} twice")
        keys[key_id] = seed
    return keys


@dataclass(frozen=True, slots=True)
class PublicKey:
    key_id: str
    public_key: str  # base64 of the raw 32-byte Ed25519 public key
    signing: bool  # the key new declarations are signed with


class DeclarationKeys:
    """The configured signing keys: the first signs, all verify."""

    def __init__(self, seeds: Mapping[str, bytes]) -> None:
        if not seeds:
            raise ValueError("at least one declaration key is needed")
        self._private = {k: Ed25519PrivateKey.from_private_bytes(s) for k, s in seeds.items()}
        self.signing_key_id = next(iter(self._private))

    @classmethod
    def from_config(cls, configured: str | None, *, development_seed: bytes) -> DeclarationKeys:
        """From IDGUARD_DECLARATION_KEYS, or (unset: development and test only, which the settings
        enforce) one key derived from the service secret."""
        if configured is None:
            return cls({DEVELOPMENT_KEY_ID: development_seed})
        return cls(parse_keys(configured))

    def sign(self, fields: Mapping[str, Any]) -> str:
        """The base64 signature of `fields` (which must name the signing key as `key_id`)."""
        if fields.get("key_id") != self.signing_key_id:
            raise ValueError("a declaration names the key that signs it")
        return base64.b64encode(self._private[self.signing_key_id].sign(canonical(fields))).decode()

    def public_keys(self) -> list[PublicKey]:
        return [
            PublicKey(
                key_id=key_id,
                public_key=base64.b64encode(
                    key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
                ).decode(),
                signing=key_id == self.signing_key_id,
            )
            for key_id, key in self._private.items()
        ]

    def verify(self, fields: Mapping[str, Any]) -> bool:
        """Whether `fields` (with `key_id` and `signature`) carry a good signature of a listed key."""
        key = self._private.get(str(fields.get("key_id")))
        if key is None:
            return False
        return verify_with(key.public_key(), fields)


def verify_with(public_key: Ed25519PublicKey, fields: Mapping[str, Any]) -> bool:
    try:
        signature = base64.b64decode(str(fields.get("signature", "")), validate=True)
        public_key.verify(signature, canonical(fields))
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True
