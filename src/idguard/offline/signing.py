"""Ed25519 signing of offline set files: the keys from configuration and the check a reader runs.

IDGUARD_OFFLINE_KEYS is "key_id:base64-of-32-byte-seed,…": the first key signs, every listed key
verifies (keep a retired key listed until no unit holds a file it signed). Development and test
derive one key from the service secret when it is unset; production refuses to start without it
(config.py). The public keys are listed at GET /api/v1/offline/keys; a reader keeps them beside
its set and refuses any file whose signature does not verify under one of them.

Pure: no database or web framework; the key ring is core/signing.py's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from idguard.core.signing import DEVELOPMENT_KEY_ID, KeyRing, PublicKey, verifies
from idguard.core.signing import parse_keys as _parse_keys
from idguard.offline import sets

__all__ = ["DEVELOPMENT_KEY_ID", "PublicKey", "SigningKeys", "parse_keys", "verify_file"]

SETTING = "IDGUARD_OFFLINE_KEYS"


def parse_keys(text: str) -> dict[str, bytes]:
    """IDGUARD_OFFLINE_KEYS -> {id: seed}, in order (the first signs)."""
    return _parse_keys(text, setting=SETTING)


class SigningKeys(KeyRing):
    """The configured keys: the first signs, all are published."""

    def sign_file(self, magic: bytes, header: dict[str, Any], body: bytes) -> bytes:
        """The complete file: the header names the signing key; the signature ends the file."""
        signed = sets.assemble(magic, {**header, "key_id": self.signing_key_id}, body)
        return signed + self.sign(signed)


def verify_file(data: bytes, keys: Mapping[str, str]) -> tuple[bytes, dict[str, Any], bytes]:
    """(magic, header, body) of a file whose signature verifies under the key its header names,
    one of `keys` ({key_id: base64 public key}); sets.BadFile otherwise."""
    magic, header, body, signed, signature = sets.split(data)
    key_id = header.get("key_id")
    encoded = keys.get(key_id) if isinstance(key_id, str) else None
    if encoded is None:
        raise sets.BadFile(f"the file is signed by an unknown key {key_id!r}")
    if not verifies(encoded, signature, signed):
        raise sets.BadFile("the file's signature does not verify: it was altered or not signed by idguard")
    return magic, header, body
