"""Settings of the web console (``CONSOLE_*``, plus the platform's ``MLOPS_*`` it needs).

The console derives from :class:`~services.common.settings.PlatformSettings`, not from the
back-end services' settings: it holds no database connection and no token-signing key, so
it can do nothing a person's own token does not allow.
"""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from services.common.settings import PlatformSettings


class ConsoleSettings(PlatformSettings):
    """Everything the console reads from its environment."""

    model_config = SettingsConfigDict(
        env_prefix="CONSOLE_", extra="ignore", populate_by_name=True, frozen=True
    )

    host: str = "127.0.0.1"
    """Interface the console's HTTP server listens on."""

    http_port: int = Field(8090, ge=0, le=65535)
    """HTTP port; 0 picks a free one (tests)."""

    monitor_urls: list[str] = Field(default_factory=lambda: ["http://127.0.0.1:8082"], min_length=1)
    """The monitor processes' HTTP addresses, as a JSON list: each watches a share of the
    models, and the console asks each for the model it shows."""

    ingest_url: str = "http://127.0.0.1:8081"
    """Ingest's HTTP address (datasets, schemas, data quality)."""

    session_key: SecretStr | None = Field(None, min_length=32)
    """Key that encrypts and authenticates the session cookie (which carries the person's
    token). Unset: a random key per process, so sessions end when the console restarts and
    several replicas cannot share them; set one (the same in every replica) in production."""

    session_ttl_seconds: int = Field(8 * 3600, ge=60, le=7 * 86400)
    """A session ends this long after sign-in (or when its token expires, if sooner)."""

    secure_cookies: bool = True
    """Mark cookies ``Secure`` (sent over HTTPS only) and send HSTS. Browsers treat
    http://127.0.0.1 and http://localhost as secure, so the local stack keeps it on; turn it
    off only to reach a console over plain HTTP from another machine, never in production."""

    request_timeout_seconds: float = Field(10.0, gt=0, le=300)
    """Deadline of each call the console makes to the registry, the monitor or ingest."""

    refresh_seconds: float = Field(5.0, ge=1, le=3600)
    """How often open pages refresh their live parts (charts, jobs, drift events)."""

    jobs_kept: int = Field(500, ge=10, le=100_000)
    """Training jobs the console remembers from the results topic (the newest)."""

    @field_validator("monitor_urls", "ingest_url")
    @classmethod
    def _http_urls(cls, value: str | list[str]) -> str | list[str]:
        for url in [value] if isinstance(value, str) else value:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"expected an http:// or https:// address, got {url[:100]!r}")
        return value
