"""Token state the workers (or brokers) share: usage counts, revocations, minted scopes, rate-
limit counters; SQLite and a shared memory table on one host, Redis across hosts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the stores are imported when opened: this package's modules import here
    from limits.storage import Storage

    from broker.config import Config
    from broker.state.ratelimit import RateLimits
    from broker.state.sqlite import TokenState


def open_rate_limits(config: Config, state: TokenState | None = None) -> RateLimits:
    """Counters every worker (SQLite) or every broker (Redis) shares; in the SQLite file
    of `state`, through its connections."""
    from broker.state.counters import SharedCounters, counters_path
    from broker.state.ratelimit import RateLimits, SqliteLimitStorage, parse_rate
    from broker.state.sqlite import SqliteTokenState

    counters = None
    if config.state_url is not None:
        from limits.storage import RedisStorage

        storage: Storage = RedisStorage(config.state_url.reveal())
    elif isinstance(state, SqliteTokenState) and state.path == config.state_db:
        storage = SqliteLimitStorage(config.state_db, connect=state.connection)
        counters = state.counters
    else:
        storage = SqliteLimitStorage(config.state_db)
        counters = SharedCounters(counters_path(config.state_db))
    per_token = parse_rate(config.rate_limit) if config.rate_limit else None
    return RateLimits(storage, per_token, config.auth_failures_per_minute, counters)


def open_token_state(config: Config) -> TokenState:
    """Redis when VANTA_STATE_URL is set (several brokers), else the SQLite file."""
    from broker.state.sqlite import SqliteTokenState

    if config.state_url is not None:
        from broker.state.redis import RedisTokenState

        return RedisTokenState(config.state_url.reveal())
    return SqliteTokenState(config.state_db)
