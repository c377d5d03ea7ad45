"""Token state in Redis, shared by several brokers.

Same interface as SqliteTokenState. "Use one if any are left" is one Lua script, so it
is atomic across every broker; each key expires by itself an hour after its token.
Any Redis failure raises StateUnavailable (fail closed); redis-py reconnects on the next
call, so service resumes by itself when Redis is back.
"""

from __future__ import annotations

import redis

from broker.errors import StateUnavailable
from broker.state.sqlite import RETENTION_SECONDS, MintedToken

_USE_ONE = """
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
if used >= tonumber(ARGV[1]) then return 0 end
redis.call('INCR', KEYS[1])
redis.call('EXPIREAT', KEYS[1], ARGV[2])
return 1
"""

_GIVE_BACK = """
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
if used > 0 then redis.call('DECR', KEYS[1]) end
return used
"""

_PREFIX = "vanta:"


class RedisTokenState:
    def __init__(self, url: str, timeout_seconds: float = 2.0) -> None:
        self._redis = redis.Redis.from_url(
            url,
            socket_timeout=timeout_seconds,
            socket_connect_timeout=timeout_seconds,
            health_check_interval=30,
        )
        self._use_one = self._redis.register_script(_USE_ONE)
        self._give_back = self._redis.register_script(_GIVE_BACK)

    def _call(self, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except redis.RedisError:
            raise StateUnavailable() from None

    def use_one(self, jti: str, limit: int, expires_at: int) -> bool:
        keep_until = expires_at + RETENTION_SECONDS
        result = self._call(self._use_one, keys=[f"{_PREFIX}usage:{jti}"], args=[limit, keep_until])
        return int(result) == 1

    def give_back(self, jti: str) -> None:
        self._call(self._give_back, keys=[f"{_PREFIX}usage:{jti}"])

    def used(self, jti: str) -> int:
        value = self._call(self._redis.get, f"{_PREFIX}usage:{jti}")
        return int(value or 0)

    def is_revoked(self, jti: str) -> bool:
        return bool(self._call(self._redis.exists, f"{_PREFIX}revoked:{jti}"))

    def revoke(self, jti: str, keep_until: int) -> None:
        key = f"{_PREFIX}revoked:{jti}"
        pipe = self._redis.pipeline()
        # A second revocation may lengthen how long it is kept, never shorten it.
        pipe.set(key, 1, nx=True, exat=keep_until)
        pipe.expireat(key, keep_until, gt=True)
        self._call(pipe.execute)

    def record_minted(self, token: MintedToken) -> None:
        key = f"{_PREFIX}minted:{token.jti}"
        pipe = self._redis.pipeline()
        pipe.hset(
            key,
            mapping={
                "environment": token.environment,
                "key_pattern": token.key_pattern,
                "expires_at": token.expires_at,
            },
        )
        pipe.expireat(key, token.expires_at + RETENTION_SECONDS)
        self._call(pipe.execute)

    def minted(self, jti: str) -> MintedToken | None:
        row = self._call(self._redis.hgetall, f"{_PREFIX}minted:{jti}")
        if not row:
            return None
        return MintedToken(
            jti,
            row[b"environment"].decode(),
            row[b"key_pattern"].decode(),
            int(row[b"expires_at"]),
        )

    def ping(self) -> None:
        self._call(self._redis.ping)
