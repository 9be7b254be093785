"""Configuration from the environment (IDGUARD_*). Built once by the app factory or CLI, never at import."""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import tempfile
from enum import StrEnum
from functools import cached_property
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url

from idguard.core.signing import parse_keys

DEVELOPMENT_SECRET = "development-only-secret-do-not-use-in-production"  # noqa: S105


TEMPLATE_KEY_BYTES = 32
_KEY_ID = re.compile(r"[A-Za-z0-9_.-]{1,16}")


def parse_template_keys(text: str, setting: str = "IDGUARD_TEMPLATE_KEYS") -> dict[str, bytes]:
    """ "id:base64,id:base64" -> {id: key}, in the given order (the first encrypts)."""
    keys: dict[str, bytes] = {}
    for n, item in enumerate(part.strip() for part in text.split(",")):
        key_id, sep, encoded = item.partition(":")
        if not sep or not _KEY_ID.fullmatch(key_id):
            raise ValueError(
                f"{setting} entry {n + 1}: expected key_id:base64 (id of 1-16 of A-Z a-z 0-9 _ . -)"
            )
        try:
            key = base64.b64decode(encoded, validate=True)
        except binascii.Error:
            raise ValueError(f"{setting} key {key_id!r} is not valid base64") from None
        if len(key) != TEMPLATE_KEY_BYTES:
            raise ValueError(f"{setting} key {key_id!r} has {len(key)} bytes, needs {TEMPLATE_KEY_BYTES}")
        if key_id in keys:
            raise ValueError(f"{setting} lists key id {key_id!r} twice")
        keys[key_id] = key
    return keys


class Environment(StrEnum):
    DEVELOPMENT = "development"
    TEST = "test"
    PRODUCTION = "production"


class Settings(BaseSettings):
    # hide_input_in_errors: a refused setting's message must never echo a secret (a key's tail).
    model_config = SettingsConfigDict(env_prefix="IDGUARD_", extra="ignore", hide_input_in_errors=True)

    env: Environment = Environment.DEVELOPMENT
    database_url: str = "sqlite:///idguard.db"
    secret_key: str = Field(default=DEVELOPMENT_SECRET, min_length=16)
    # Keys derived from secret_key for one job each (HKDF); either may be pinned on its own.
    token_key_override: SecretStr | None = Field(default=None, alias="IDGUARD_TOKEN_KEY", min_length=16)
    check_hash_key_override: SecretStr | None = Field(
        default=None, alias="IDGUARD_CHECK_HASH_KEY", min_length=16
    )
    token_ttl_seconds: int = Field(default=3600, ge=60, le=86400)
    # Server worker processes: each holds its own verification index; rate limits are divided.
    workers: int = Field(default=1, ge=1, le=64)
    # Invalid at once (verification/runtime/node.py): the directory shared by the processes that
    # serve this database on this machine. Unset: one derived from the database URL in the
    # system's temporary directory, so every process here using the same database joins the same
    # node. A write that changed an answer waits up to propagation_wait_ms for every live worker;
    # with scale-out (NATS) the same setting is each verifier node's lease: a node that has heard
    # nothing from the relay for that long refuses to answer (docs/scaling.md, "The node's cut-off").
    node_dir: Path | None = None
    propagation_wait_ms: int = Field(default=250, ge=0, le=10_000)
    # The follower's safety-net poll of the ledger (it is woken at once by writes on this node,
    # and by PostgreSQL's NOTIFY from any node).
    index_poll_ms: int = Field(default=20, ge=1, le=60_000)
    # SQLite waits this long for the writer lock before giving up with a 503.
    sqlite_busy_timeout_ms: int = 10_000
    # Fingerprint template encryption keys (AES-256-GCM), "key_id:base64-of-32-bytes" separated by
    # commas. The first key encrypts new templates; every listed key decrypts. To rotate: put a
    # new key first, run `idguard fingerprints rekey`, then drop the old key. Development and test
    # derive a key from secret_key when this is unset; production refuses to start without it.
    template_keys: SecretStr | None = None
    # Personal data at rest (names, addresses, finders' names and phones; docs/operations.md, key
    # rotation): AES-256-GCM keys in the same "key_id:base64-of-32-bytes,…" form, a ring of their
    # own (a template key opens no name, and each rotates alone). The first seals; every listed
    # key opens, so rotate with `idguard keys rekey` before dropping an old key. Development and
    # test derive one from secret_key when unset; production refuses to start without it.
    data_keys: SecretStr | None = None
    # Decision threshold of the 1:1 fingerprint comparison (MCC similarity, 0..1). The default is
    # calibrated at a false match rate of 1 in 10,000 on synthetic data (docs/fingerprints.md);
    # `idguard fingerprints calibrate --fmr 0.001` computes the threshold for another rate.
    # The matcher's calibrated default (biometrics.matching.DEFAULT_THRESHOLD; a test keeps them equal).
    fingerprint_threshold: float = Field(default=0.0643, gt=0.0, lt=1.0)
    # The check log's journal (docs/checklog.md): a local directory where every answered check is
    # synced before its answer leaves, and which a worker replays into the database when it starts.
    # Unset: beside the SQLite file (`idguard.db-checklog/`), or `idguard-checklog/` in the working
    # directory with PostgreSQL. `checklog_journal=false` turns the journal off (answered checks
    # are then only in memory until written): for comparisons only, never in production.
    checklog_dir: Path | None = None
    checklog_journal: bool = True
    # Webhook messages and logged delivery attempts are kept this long (resend, delivery log),
    # then the dispatcher purges them (docs/webhooks.md, "Retention").
    webhook_retention_days: int = Field(default=30, ge=1, le=3650)
    # --- accountability of units (accountability/, issue 11; docs/accountability.md) ---
    # A transaction is judged against the unit's checks of the number within this many hours
    # before it (and, for `checked_after`, after it).
    check_window_hours: int = Field(default=24, ge=1, le=24 * 31)
    # The monthly level ladder, "level:rate_percent:min_violations" for early_warning, standard
    # and excessive (accountability/rules.py parses it; DOMAIN.md's defaults).
    compliance_levels: str = "early_warning:0.65:75,standard:0.9:100,excessive:1.8:1000"
    # --- citizens' own view (citizens/, issue 12) ---
    # Citizen tokens (signed with a key of their own, derived from secret_key: never a staff key).
    citizen_token_ttl_seconds: int = Field(default=1800, ge=60, le=86400)
    # The check log keeps checks this long (DOMAIN: at least 24 months); `idguard citizens
    # purge-checks` removes older ones, and GET /me/checks says how far back it reaches.
    check_retention_months: int = Field(default=24, ge=24, le=240)
    # Loss declarations are signed with Ed25519: "key_id:base64-of-32-byte-seed" separated by
    # commas; the first signs, every listed key verifies (keep retired keys listed so old
    # declarations stay verifiable). Development and test derive one from secret_key when unset;
    # a production app refuses to start without it (citizens.install parses and checks it).
    declaration_keys: SecretStr | None = None

    # The web console (console/): a signed-in session ends after this many idle minutes, and
    # after console_session_hours whatever happens (then sign in again).
    console_idle_minutes: int = Field(default=15, ge=1, le=480)
    console_session_hours: int = Field(default=10, ge=1, le=24)
    # --- offline verification (offline/, issue 20; docs/offline.md) ---
    # Ed25519 keys signing the offline set and its deltas: "key_id:base64-of-32-byte-seed,…"; the
    # first signs, every listed key is published at GET /api/v1/offline/keys. Development and test
    # derive one from secret_key when unset; production refuses to start without it.
    offline_keys: SecretStr | None = None
    # --- tamper-evident ledger and audit log (registry/chains.py; docs/operations.md) ---
    # Ed25519 keys signing the ledger's and the audit log's checkpoints: "key_id:base64-of-32-
    # byte-seed,…"; the first signs, every listed key verifies (keep a retired key listed while
    # checkpoints it signed are kept). Development and test derive one from secret_key when unset;
    # production refuses to start without it.
    ledger_keys: SecretStr | None = None
    # A key outside the universe of issued cards (a forged chip serial) is `valid` with
    # probability 2^-offline_k; the set costs about 1.075 * offline_k bits per valid card.
    offline_k: int = Field(default=16, ge=8, le=32)
    # GET /offline/deltas answers 410 (fetch a snapshot) when more ledger events than this lie
    # after the unit's version; a worker rebuilds its cached snapshot when it is older than
    # offline_snapshot_seconds or this many events behind.
    offline_max_delta_events: int = Field(default=200_000, ge=100)
    offline_snapshot_seconds: int = Field(default=3600, ge=1)

    # --- operations (ops/, issue 16; docs/operations.md) ---
    # Log lines: "text" (the default) or "json" (one object per line: time, level, logger,
    # message, request_id, pid).
    log_format: str = Field(default="text", pattern="^(text|json)$")
    # GET /metrics answers only `Authorization: Bearer <this>` when set; anyone when unset.
    metrics_token: SecretStr | None = Field(default=None, min_length=16)
    # With several workers, each worker's counts are written to files here and /metrics adds them
    # up (prometheus_client's multiprocess mode; PROMETHEUS_MULTIPROC_DIR is used when this is
    # unset). Empty it before the server starts. Unset with one worker: counts stay in memory.
    metrics_dir: Path | None = None
    # --- scale-out (scaleout/, issue 15; docs/scaling.md) ---
    # The NATS server (JetStream) of the relay, the verifier nodes and the check-log sink; unset:
    # no scale-out (one process answers from the database, as `make run` does).
    nats_url: str | None = None
    # Prefixes every stream, subject, consumer and bucket name, so several deployments (and test
    # runs) share one NATS server without touching each other.
    nats_prefix: str = Field(default="idguard", pattern=r"^[A-Za-z0-9_-]{1,32}$")

    @model_validator(mode="after")
    def _no_default_secret_outside_development(self) -> Settings:
        if self.env is not Environment.DEVELOPMENT and self.secret_key == DEVELOPMENT_SECRET:
            raise ValueError("IDGUARD_SECRET_KEY must be set outside development")
        if self.env is Environment.PRODUCTION:
            # Keys that development derives from the secret; production takes them from the
            # operator, every one named when missing (one start-up, not one per missing key).
            missing = [
                f"{name} must be set in production"
                for name, value in (
                    ("IDGUARD_TEMPLATE_KEYS", self.template_keys),
                    ("IDGUARD_DATA_KEYS", self.data_keys),
                    ("IDGUARD_OFFLINE_KEYS", self.offline_keys),
                    ("IDGUARD_DECLARATION_KEYS", self.declaration_keys),
                    ("IDGUARD_LEDGER_KEYS", self.ledger_keys),
                )
                if value is None
            ]
            if missing:
                raise ValueError("; ".join(missing))
        if self.template_keys is not None:
            parse_template_keys(self.template_keys.get_secret_value())  # fail at start, not at first use
        if self.ledger_keys is not None:
            parse_keys(self.ledger_keys.get_secret_value(), setting="IDGUARD_LEDGER_KEYS")
        if self.data_keys is not None:
            parse_template_keys(self.data_keys.get_secret_value(), "IDGUARD_DATA_KEYS")
        return self

    def derived_key(self, purpose: str) -> bytes:
        """A 32-byte key for one purpose, derived from secret_key with HKDF-SHA256 and the
        purpose as its label: each job has its own key, and no key reveals another."""
        return HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=f"idguard/{purpose}/v1".encode()
        ).derive(self.secret_key.encode())

    @cached_property
    def token_key(self) -> str:
        """Signs staff tokens. Set IDGUARD_TOKEN_KEY to rotate it alone (every token signed with the
        old one stops; nothing else changes)."""
        if self.token_key_override is not None:
            return self.token_key_override.get_secret_value()
        return self.derived_key("staff-token").hex()

    @cached_property
    def check_hash_key(self) -> str:
        """Keys the hash of the id number in the check log (a citizen finds their own checks by it).
        Changing it orphans every check recorded before: pin IDGUARD_CHECK_HASH_KEY to its current
        value before changing secret_key."""
        if self.check_hash_key_override is not None:
            return self.check_hash_key_override.get_secret_value()
        return self.derived_key("check-log-hash").hex()

    @cached_property
    def personal_data_keys(self) -> dict[str, bytes]:
        """The key ring sealing personal data (IDGUARD_DATA_KEYS), first key sealing. Development
        and test: one key derived from secret_key under the id "derived" (production refuses to
        start without IDGUARD_DATA_KEYS, so nothing derived ever seals a real citizen's name)."""
        if self.data_keys is not None:
            return parse_template_keys(self.data_keys.get_secret_value(), "IDGUARD_DATA_KEYS")
        return {"derived": self.derived_key("personal-data")}

    @cached_property
    def idempotency_key(self) -> bytes:
        """Seals the stored answers of idempotent writes (idguard.uow)."""
        return self.derived_key("idempotency")

    @cached_property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @cached_property
    def node_directory(self) -> Path | None:
        """The node's shared directory; None for an in-memory database (no other process can
        serve it)."""
        if self.node_dir is not None:
            return self.node_dir
        url = make_url(self.database_url)
        if self.is_sqlite and (not url.database or url.database == ":memory:" or "mode=memory" in str(url)):
            return None
        if self.is_sqlite:
            where = str(Path(url.database or "").resolve())
        else:
            where = url.render_as_string(hide_password=True)
        digest = hashlib.sha256(where.encode()).hexdigest()[:16]
        return Path(tempfile.gettempdir()) / f"idguard-node-{digest}"

    @cached_property
    def checklog_journal_dir(self) -> Path | None:
        """Where the check log's journal lives; None when it is off (or the database is in memory)."""
        if not self.checklog_journal:
            return None
        if self.checklog_dir is not None:
            return self.checklog_dir
        if not self.is_sqlite:
            return Path("idguard-checklog")
        database = make_url(self.database_url).database
        if not database or database == ":memory:" or database.startswith("file:"):
            return None
        return Path(database + "-checklog")
