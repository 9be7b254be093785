"""Template keys from configuration, sealing, and rotation."""

from __future__ import annotations

import base64

import pytest
from pydantic import ValidationError

from idguard.biometrics.vault import DERIVED_KEY_ID, TemplateVault, VaultError
from idguard.config import Environment, Settings, parse_template_keys

SECRET = "test-secret-key-0123456789abcdef"
K1 = base64.b64encode(b"\x01" * 32).decode()
K2 = base64.b64encode(b"\x02" * 32).decode()
CONTEXT = b"idguard/fingerprint/card-1/1/template"


def test_keys_parse_in_order_the_first_encrypts() -> None:
    keys = parse_template_keys(f"new:{K2}, old:{K1}")
    assert list(keys) == ["new", "old"]
    assert TemplateVault(keys).active_key_id == "new"


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("nokey", "key_id:base64"),
        (f"has space:{K1}", "key_id:base64"),
        ("k:not-base64!", "not valid base64"),
        (f"k:{base64.b64encode(b'short').decode()}", "has 5 bytes, needs 32"),
        (f"k:{K1},k:{K2}", "twice"),
    ],
)
def test_bad_key_configuration_is_refused_at_start(text: str, says: str) -> None:
    with pytest.raises(ValidationError, match=says) as refused:
        Settings(secret_key=SECRET, template_keys=f"{text},good:{K2}")
    assert K2 not in str(refused.value)  # the message never echoes key material
    assert K2[-12:] not in str(refused.value)


def test_production_needs_template_keys() -> None:
    with pytest.raises(ValidationError, match="IDGUARD_TEMPLATE_KEYS"):
        Settings(env=Environment.PRODUCTION, secret_key=SECRET)
    settings = Settings(
        env=Environment.PRODUCTION,
        secret_key=SECRET,
        template_keys=f"k1:{K1}",
        offline_keys=f"o1:{K1}",
        declaration_keys=f"d1:{K1}",
        ledger_keys=f"l1:{K1}",
        data_keys=f"p1:{K1}",
    )
    assert TemplateVault.from_settings(settings).key_ids == ("k1",)
    assert K1 not in repr(settings)  # a secret never prints


def test_development_derives_a_key_from_the_service_secret() -> None:
    a = TemplateVault.from_settings(Settings(env=Environment.TEST, secret_key=SECRET))
    b = TemplateVault.from_settings(Settings(env=Environment.TEST, secret_key=SECRET.upper()))
    key_id, blob = a.seal(b"template", context=CONTEXT)
    assert key_id == DERIVED_KEY_ID
    assert a.open(key_id, blob, context=CONTEXT) == b"template"
    with pytest.raises(VaultError):
        b.open(key_id, blob, context=CONTEXT)  # another secret, another key


def test_sealed_bytes_reveal_nothing_and_fail_closed() -> None:
    vault = TemplateVault(parse_template_keys(f"k1:{K1}"))
    key_id, blob = vault.seal(b"FMR\x00 20\x00" + b"minutiae" * 20, context=CONTEXT)
    assert b"FMR" not in blob
    assert b"minutiae" not in blob
    assert vault.seal(b"same", context=CONTEXT)[1] != vault.seal(b"same", context=CONTEXT)[1]  # fresh nonce
    with pytest.raises(VaultError, match="authentication"):
        vault.open(key_id, blob, context=b"idguard/fingerprint/card-2/1/template")  # moved to another card
    tampered = blob[:-1] + bytes([blob[-1] ^ 1])
    with pytest.raises(VaultError, match="authentication"):
        vault.open(key_id, tampered, context=CONTEXT)
    with pytest.raises(VaultError, match="not configured"):
        vault.open("gone", blob, context=CONTEXT)
    with pytest.raises(VaultError, match="truncated"):
        vault.open(key_id, blob[:20], context=CONTEXT)


def test_rotation_old_key_still_opens_until_dropped() -> None:
    old = TemplateVault(parse_template_keys(f"k1:{K1}"))
    key_id, blob = old.seal(b"template", context=CONTEXT)
    rotated = TemplateVault(parse_template_keys(f"k2:{K2},k1:{K1}"))
    assert rotated.open(key_id, blob, context=CONTEXT) == b"template"
    new_id, new_blob = rotated.seal(b"template", context=CONTEXT)
    assert new_id == "k2"
    only_new = TemplateVault(parse_template_keys(f"k2:{K2}"))
    assert only_new.open(new_id, new_blob, context=CONTEXT) == b"template"
    with pytest.raises(VaultError):
        only_new.open(key_id, blob, context=CONTEXT)
