"""IDGUARD_LEDGER_KEYS: production refuses to start without it; development and test derive one
key from the service secret; a bad entry is named without echoing key material."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from pydantic import ValidationError

from idguard.config import Environment, Settings
from idguard.core.signing import DEVELOPMENT_KEY_ID
from idguard.registry.chains import keyring

SECRET = "test-secret-key-0123456789abcdef"
SEED = base64.b64encode(bytes(range(32))).decode()
OTHERS: dict[str, Any] = {
    "template_keys": f"t:{SEED}",
    "data_keys": f"d:{SEED}",
    "declaration_keys": f"c:{SEED}",
    "offline_keys": f"o:{SEED}",
}


def test_production_refuses_to_start_without_ledger_keys() -> None:
    with pytest.raises(ValidationError, match="IDGUARD_LEDGER_KEYS must be set in production"):
        Settings(env=Environment.PRODUCTION, secret_key=SECRET, **OTHERS)
    settings = Settings(env=Environment.PRODUCTION, secret_key=SECRET, ledger_keys=f"l2027:{SEED}", **OTHERS)
    assert keyring(settings).signing_key_id == "l2027"


def test_a_bad_ledger_key_is_named_without_its_bytes() -> None:
    short = base64.b64encode(b"\x07" * 16).decode()
    with pytest.raises(
        ValidationError, match="IDGUARD_LEDGER_KEYS key 'l1' has 16 bytes, needs 32"
    ) as refused:
        Settings(env=Environment.TEST, secret_key=SECRET, ledger_keys=f"l1:{short}")
    assert short not in str(refused.value)


def test_development_derives_a_key_of_its_own_from_the_secret() -> None:
    settings = Settings(env=Environment.TEST, secret_key=SECRET)
    ring = keyring(settings)
    assert ring.signing_key_id == DEVELOPMENT_KEY_ID
    other = keyring(Settings(env=Environment.TEST, secret_key=SECRET + "x"))
    assert ring.public()[0].public_key != other.public()[0].public_key
    # Its own key: not the offline sets' or the declarations' (each derived for one purpose).
    assert settings.derived_key("ledger-checkpoints") != settings.derived_key("offline-sets")
