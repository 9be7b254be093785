"""Unit API keys (verification/rules.py), written out by hand from docs/rules.md ("32 random
bytes, stored as SHA-256 with a lookup prefix") and docs/integration.md (`idg_…`): what a key
looks like, what is stored of it, and that the stored prefix finds it again. Kills the mutants
`make mutation` found (docs/testing.md)."""

from __future__ import annotations

import base64

from idguard.verification.rules import PURPOSES, UnitStatus, hash_key, key_prefix, new_api_key


def test_a_new_key_is_idg_and_32_random_bytes_in_base64url() -> None:
    key, _, _ = new_api_key()
    assert key.startswith("idg_")
    secret = key.removeprefix("idg_")
    assert len(secret) == 43  # 32 bytes, base64url without padding
    assert len(base64.urlsafe_b64decode(secret + "=")) == 32


def test_every_key_is_new() -> None:
    keys = {new_api_key()[0] for _ in range(50)}
    assert len(keys) == 50


def test_the_stored_prefix_is_the_keys_first_16_characters_and_finds_it_again() -> None:
    """The prefix column is 16 characters (verification/models.py); every issued key is looked up
    by it, so its length is part of the stored format."""
    key, prefix, digest = new_api_key()
    assert prefix == key[:16]
    assert key_prefix(key) == prefix
    assert digest == hash_key(key)


def test_a_presented_key_is_looked_up_by_its_first_16_characters() -> None:
    assert key_prefix("idg_ABCDEFGHIJKLmnopqrstuvwxyz") == "idg_ABCDEFGHIJKL"
    assert key_prefix("idg_short") == "idg_short"


def test_the_stored_hash_is_sha256_hex_of_the_whole_key() -> None:
    # The keys already issued are stored this way: another digest would lock every unit out.
    assert hash_key("idg_example") == "01884a81e76a7fdf50165fc78940387662a17af2f97e10a11fd7e561c4544de8"


def test_unit_statuses_and_purposes_are_the_contracts_values() -> None:
    assert {s.value for s in UnitStatus} == {"active", "suspended"}
    assert {"account_opening", "hotel_checkin"} <= PURPOSES  # API.md's examples
