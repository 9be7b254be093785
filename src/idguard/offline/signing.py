"""Ed25519 signing of offline set files: the keys from configuration and the check a reader runs.

IDGUARD_OFFLINE_KEYS is "key_id:base64-of-32-byte-seed,…": the first key signs, every listed key
verifies (keep a retired key listed until no unit holds a file it signed). Development and test
derive one key from the service secret when it is unset; production refuses to start without it
(config.py). The public keys are listed at GET /api/v1/offline/keys; a reader keeps them beside
its set and refuses any file whose signature does not verify under one of them.

Pure: no database or web framework, only `cryptography`.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from idguard.offline import sets

SEED_BYTES = 32
DEVELOPMENT_KEY_ID = "dev1"
_KEY_ID = re.compile(r"[A-Za-z0-9_.-]{1,16}")


def parse_keys(text: str) -> dict[str, bytes]:
    """ "id:base64seed,id:base64seed" -> {id: seed}, in order (the first signs). ValueError names
    the bad entry, never a key's bytes."""
    keys: dict[str, bytes] = {}
    for n, item in enumerate(part.strip() for part in text.split(",")):
        key_id, sep, encoded = item.partition(":")
        if not sep or not _KEY_ID.fullmatch(key_id):
            raise ValueError(
                f"IDGUARD_OFFLINE_KEYS entry {n + 1}: expected key_id:base64 (id of 1-16 of A-Z a-z 0-9 _ . -)"
            )
        try:
            seed = base64.b64decode(encoded, validate=True)
        except binascii.Error:
            raise ValueError(f"IDGUARD_OFFLINE_KEYS key {key_id!r} is not valid base64") from None
        if len(seed) != SEED_BYTES:
            raise ValueError(f"IDGUARD_OFFLINE_KEYS key {key_id!r} has {len(seed)} bytes, needs {SEED_BYTES}")
        if key_id in keys:
            raise ValueError(f"IDGUARD_OFFLINE_KEYS lists key id {key_id!r} twice")
        keys[key_id] = seed
    return keys


@dataclass(frozen=True, slots=True)
class PublicKey:
    key_id: str
    public_key: str  # base64 of the raw 32-byte Ed25519 public key
    signing: bool


class SigningKeys:
    """The configured keys: the first signs, all are published."""

    def __init__(self, seeds: Mapping[str, bytes]) -> None:
        if not seeds:
            raise ValueError("at least one offline signing key is needed")
        self._private = {k: Ed25519PrivateKey.from_private_bytes(s) for k, s in seeds.items()}
        self.signing_key_id = next(iter(self._private))

    def public(self) -> list[PublicKey]:
        return [
            PublicKey(
                key_id,
                base64.b64encode(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode(),
                key_id == self.signing_key_id,
            )
            for key_id, key in self._private.items()
        ]

    def sign_file(self, magic: bytes, header: dict[str, Any], body: bytes) -> bytes:
        """The complete file: the header names the signing key; the signature ends the file."""
        signed = sets.assemble(magic, {**header, "key_id": self.signing_key_id}, body)
        return signed + self._private[self.signing_key_id].sign(signed)


def verify_file(data: bytes, keys: Mapping[str, str]) -> tuple[bytes, dict[str, Any], bytes]:
    """(magic, header, body) of a file whose signature verifies under the key its header names,
    one of `keys` ({key_id: base64 public key}); sets.BadFile otherwise."""
    magic, header, body, signed, signature = sets.split(data)
    key_id = header.get("key_id")
    encoded = keys.get(key_id) if isinstance(key_id, str) else None
    if encoded is None:
        raise sets.BadFile(f"the file is signed by an unknown key {key_id!r}")
    try:
        Ed25519PublicKey.from_public_bytes(base64.b64decode(encoded)).verify(signature, signed)
    except (InvalidSignature, ValueError, binascii.Error):
        raise sets.BadFile(
            "the file's signature does not verify: it was altered or not signed by idguard"
        ) from None
    return magic, header, body
