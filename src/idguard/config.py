"""Configuration from the environment (IDGUARD_*). Built once by the app factory or CLI, never at import."""

from __future__ import annotations

from enum import StrEnum
from functools import cached_property

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEVELOPMENT_SECRET = "development-only-secret-do-not-use-in-production"  # noqa: S105


class Environment(StrEnum):
    DEVELOPMENT = "development"
    TEST = "test"
    PRODUCTION = "production"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="IDGUARD_", extra="ignore")

    env: Environment = Environment.DEVELOPMENT
    database_url: str = "sqlite:///idguard.db"
    secret_key: str = Field(default=DEVELOPMENT_SECRET, min_length=16)
    token_ttl_seconds: int = Field(default=3600, ge=60, le=86400)
    # Server worker processes: each holds its own verification index; rate limits are divided.
    workers: int = Field(default=1, ge=1, le=64)
    # SQLite waits this long for the writer lock before giving up with a 503.
    sqlite_busy_timeout_ms: int = 10_000

    @model_validator(mode="after")
    def _no_default_secret_outside_development(self) -> Settings:
        if self.env is not Environment.DEVELOPMENT and self.secret_key == DEVELOPMENT_SECRET:
            raise ValueError("IDGUARD_SECRET_KEY must be set outside development")
        return self

    @cached_property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")
