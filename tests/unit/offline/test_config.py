"""Offline signing keys from configuration: production needs them; development derives one."""

from __future__ import annotations

import base64

import pytest
from pydantic import SecretStr

from idguard.config import Environment, Settings
from idguard.offline.service import signing_keys
from idguard.offline.signing import DEVELOPMENT_KEY_ID

SECRET = "test-secret-key-0123456789abcdef"


def test_production_refuses_to_start_without_offline_keys() -> None:
    seed = base64.b64encode(bytes(32)).decode()
    others = {
        "template_keys": f"t:{seed}",
        "declaration_keys": f"d:{seed}",
        "ledger_keys": f"l:{seed}",
        "data_keys": f"p:{seed}",
    }
    with pytest.raises(ValueError, match="IDGUARD_OFFLINE_KEYS must be set in production"):
        Settings(env=Environment.PRODUCTION, secret_key=SECRET, **others)
    settings = Settings(env=Environment.PRODUCTION, secret_key=SECRET, offline_keys=f"k:{seed}", **others)
    assert signing_keys(settings).signing_key_id == "k"


def test_configured_keys_first_signs_all_published() -> None:
    new, old = base64.b64encode(bytes(32)).decode(), base64.b64encode(bytes(range(32))).decode()
    settings = Settings(
        database_url="sqlite://",
        env=Environment.TEST,
        secret_key=SECRET,
        offline_keys=SecretStr(f"k2:{new},k1:{old}"),
    )
    keys = signing_keys(settings)
    assert [(k.key_id, k.signing) for k in keys.public()] == [("k2", True), ("k1", False)]


def test_development_derives_one_key_from_the_secret() -> None:
    one = signing_keys(Settings(database_url="sqlite://", env=Environment.TEST, secret_key=SECRET)).public()
    again = signing_keys(Settings(database_url="sqlite://", env=Environment.TEST, secret_key=SECRET)).public()
    other = signing_keys(
        Settings(database_url="sqlite://", env=Environment.TEST, secret_key=SECRET + "x")
    ).public()
    assert [k.key_id for k in one] == [DEVELOPMENT_KEY_ID]
    assert one == again
    assert one[0].public_key != other[0].public_key
