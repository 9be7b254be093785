"""Encryption at rest for fingerprint templates (AES-256-GCM, keys from configuration).

A sealed blob is `nonce (12 bytes) || ciphertext || tag (16 bytes)`; the row beside it names the
key id, so keys rotate without a flag day: new keys encrypt, old keys still decrypt until
`idguard fingerprints rekey` has re-encrypted every row, then the old key is dropped from the
configuration. The associated data binds a blob to its card and finger, so a ciphertext copied
onto another card's row fails to decrypt instead of impersonating that card's finger.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from idguard.config import TEMPLATE_KEY_BYTES, Environment, Settings, parse_template_keys

NONCE_BYTES = 12
DERIVED_KEY_ID = "derived"


class VaultError(Exception):
    """A blob cannot be opened: unknown key id, wrong key, or tampered or misplaced ciphertext."""


class TemplateVault:
    """Seals and opens template bytes. `keys` in order: the first encrypts, all decrypt."""

    def __init__(self, keys: dict[str, bytes]) -> None:
        if not keys:
            raise ValueError("the template vault needs at least one key")
        self._ciphers = {key_id: AESGCM(key) for key_id, key in keys.items()}
        self.active_key_id = next(iter(keys))

    @classmethod
    def from_settings(cls, settings: Settings) -> TemplateVault:
        if settings.template_keys is not None:
            return cls(parse_template_keys(settings.template_keys.get_secret_value()))
        if settings.env is Environment.PRODUCTION:  # the settings validator already refuses this
            raise ValueError("IDGUARD_TEMPLATE_KEYS must be set in production")
        # Development and test only: a key derived from the service secret, so nothing default
        # is ever used to encrypt biometrics where it matters.
        derived = HKDF(
            algorithm=hashes.SHA256(),
            length=TEMPLATE_KEY_BYTES,
            salt=None,
            info=b"idguard fingerprint templates v1",
        ).derive(settings.secret_key.encode())
        return cls({DERIVED_KEY_ID: derived})

    @property
    def key_ids(self) -> tuple[str, ...]:
        return tuple(self._ciphers)

    def seal(self, plaintext: bytes, *, context: bytes) -> tuple[str, bytes]:
        """Encrypt under the active key: (key_id, nonce || ciphertext || tag)."""
        nonce = os.urandom(NONCE_BYTES)
        return self.active_key_id, nonce + self._ciphers[self.active_key_id].encrypt(
            nonce, plaintext, context
        )

    def open(self, key_id: str, blob: bytes, *, context: bytes) -> bytes:
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise VaultError(f"template key {key_id!r} is not configured (IDGUARD_TEMPLATE_KEYS)")
        if len(blob) < NONCE_BYTES + 16:  # a nonce and a tag at the least
            raise VaultError(f"a template sealed under key {key_id!r} is truncated")
        try:
            return cipher.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], context)
        except InvalidTag:
            raise VaultError(f"a template sealed under key {key_id!r} failed authentication") from None
