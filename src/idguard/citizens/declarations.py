"""Signing loss declarations (遗失声明): Ed25519 keys from configuration and the canonical bytes.

The signed bytes of a declaration are its public JSON object without `signature`, serialised
canonically: keys sorted, no whitespace (separators "," and ":"), non-ASCII characters as
themselves, UTF-8:

    json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")

`key_id` is one of those fields, so a signature cannot be moved to another key. Anyone checks a
declaration offline with the public key listed at GET /api/v1/declarations/keys (docs/citizens.md
has a 20-line script). Keys rotate by putting a new key first in IDGUARD_DECLARATION_KEYS; the
retired ones stay listed (they verify, never sign), so old declarations stay verifiable.

No database, no web framework: the key ring is core/signing.py's.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any

from idguard.core.signing import DEVELOPMENT_KEY_ID, KeyRing, PublicKey, verifies
from idguard.core.signing import parse_keys as _parse_keys

SETTING = "IDGUARD_DECLARATION_KEYS"


def canonical(fields: Mapping[str, Any]) -> bytes:
    """The bytes a declaration's signature covers: every field but `signature`."""
    signed = {k: v for k, v in fields.items() if k != "signature"}
    return json.dumps(signed, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def parse_keys(text: str) -> dict[str, bytes]:
    """IDGUARD_DECLARATION_KEYS -> {id: seed}, in order (the first signs)."""
    return _parse_keys(text, setting=SETTING)


class DeclarationKeys:
    """The configured signing keys (core/signing.py's key ring): the first signs, all verify."""

    def __init__(self, seeds: Mapping[str, bytes]) -> None:
        self._ring = KeyRing(seeds)
        self.signing_key_id = self._ring.signing_key_id

    @classmethod
    def from_config(cls, configured: str | None, *, development_seed: bytes) -> DeclarationKeys:
        """From IDGUARD_DECLARATION_KEYS, or (unset: development and test only, which the settings
        enforce) one key derived from the service secret."""
        return cls(
            parse_keys(configured) if configured is not None else {DEVELOPMENT_KEY_ID: development_seed}
        )

    def sign(self, fields: Mapping[str, Any]) -> str:
        """The base64 signature of `fields` (which must name the signing key as `key_id`)."""
        if fields.get("key_id") != self.signing_key_id:
            raise ValueError("a declaration names the key that signs it")
        return base64.b64encode(self._ring.sign(canonical(fields))).decode()

    def public_keys(self) -> list[PublicKey]:
        return self._ring.public()

    def verify(self, fields: Mapping[str, Any]) -> bool:
        """Whether `fields` (with `key_id` and `signature`) carry a good signature of a listed key."""
        key = self._ring.public_key(str(fields.get("key_id")))
        if key is None:
            return False
        try:
            signature = base64.b64decode(str(fields.get("signature", "")), validate=True)
        except (binascii.Error, ValueError):
            return False
        return verifies(key, signature, canonical(fields))
