"""Concealing injected values in a byte stream that arrives in pieces.

`Masker.feed` takes the child's output as it comes and gives back what may be shown now:
every occurrence of a secret replaced by `<concealed by vanta>`, also when the secret
is split across writes. It holds back only the tail that may still be the start of a
secret; everything before it is final. `Masker.finish` hands over the rest at end of
stream. Bytes, not text: binary output that holds no secret passes through unchanged.

Occurrences may overlap (`abcd` and `cdef` in `abcdef`): every byte inside any
occurrence is concealed, and one marker stands for each run of concealed bytes. The
result does not depend on how the stream was cut into writes.

Cost per write: one `bytes.find` scan per secret over the new bytes (plus the tail of
the previous write, at most the longest secret less one byte), and a check of the
positions in that tail where a secret could begin.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from cli.run.injected import InjectedVar

MARKER = b"<concealed by vanta>"
MIN_MASKED_LENGTH = 4  # shorter values would conceal half the output (and say little)
PROBE = 8  # bytes of a secret's start searched for at C speed when looking for a held tail


class Masker:
    """Conceals `secrets` (non-empty byte strings) in one stream."""

    def __init__(self, secrets: Iterable[bytes], marker: bytes = MARKER) -> None:
        self._secrets = sorted({s for s in secrets if s}, key=len, reverse=True)
        self._marker = marker
        self._context = max((len(s) for s in self._secrets), default=1) - 1
        self._buf = b""  # already shown context, then the held-back tail
        self._shown = 0  # _buf[:_shown] has been handed out

    @property
    def held(self) -> int:
        """How many bytes are held back, waiting to see whether a secret completes."""
        return len(self._buf) - self._shown

    def feed(self, data: bytes) -> bytes:
        """Take the next piece of the stream; what can be shown now."""
        if not self._secrets:
            return data
        self._buf += data
        return self._emit(self._hold_point())

    def finish(self) -> bytes:
        """End of stream: the rest (nothing can complete a secret any more)."""
        out = self._emit(len(self._buf)) if self._secrets else b""
        self._buf, self._shown = b"", 0
        return out

    def _hold_point(self) -> int:
        """Where the tail that may still begin a secret starts (len(_buf) if none)."""
        buf, end = self._buf, len(self._buf)
        hold = end
        view = memoryview(buf)
        for secret in self._secrets:
            first = max(self._shown, end - len(secret) + 1)
            if first >= hold:
                continue  # this secret could only begin later than a tail already held
            # a tail of PROBE bytes or more begins with the secret's first PROBE bytes
            probe = secret[: min(PROBE, len(secret) - 1)]
            i = buf.find(probe, first, hold - 1 + len(probe))
            while i != -1:
                if secret.startswith(view[i:]):
                    hold = i
                    break
                i = buf.find(probe, i + 1, hold - 1 + len(probe))
            # shorter tails, longest first
            for size in range(min(len(probe) - 1, end - first), 0, -1):
                if end - size >= hold:
                    break
                if buf.endswith(secret[:size]):
                    hold = end - size
                    break
        return hold

    def _covered(self, start: int, end: int) -> list[list[int]]:
        """Runs [a, b) of _buf touching [start, end) that lie inside some occurrence,
        merged where they overlap."""
        buf = self._buf
        spans = []
        for secret in self._secrets:
            size = len(secret)
            i = buf.find(secret, max(0, start - size + 1), end + size - 1)
            while i != -1:
                spans.append((i, i + size))
                i = buf.find(secret, i + 1, end + size - 1)
        spans.sort()
        runs: list[list[int]] = []
        for a, b in spans:
            if runs and a < runs[-1][1]:
                runs[-1][1] = max(runs[-1][1], b)
            else:
                runs.append([a, b])
        return runs

    def _emit(self, upto: int) -> bytes:
        """Hand out _buf[_shown:upto], concealed; keep the context a secret may need."""
        shown, buf = self._shown, self._buf
        out = bytearray()
        pos = shown
        for a, b in self._covered(shown, upto):
            if b <= shown or a >= upto:
                continue
            if a > pos:
                out += buf[pos:a]
            if a >= shown:  # a run begun before `shown` already has its marker out there
                out += self._marker
            pos = min(b, upto)
        if pos < upto:
            out += buf[pos:upto]
        keep_from = max(0, upto - self._context)
        self._buf = buf[keep_from:]
        self._shown = upto - keep_from
        return bytes(out)


@dataclass(frozen=True)
class MaskPlan:
    """What masking conceals, and the keys it leaves visible (names, never values)."""

    secrets: tuple[bytes, ...] = field(repr=False)
    too_short: tuple[InjectedVar, ...]


def mask_plan(variables: Sequence[InjectedVar]) -> MaskPlan:
    """Every injected secret text of 4 characters or more; numbers, booleans and a
    template's plain lines are not secrets. Each line of a multi-line value is concealed
    on its own too (a program may print a key line by line)."""
    secrets: list[bytes] = []
    too_short: list[InjectedVar] = []
    for var in variables:
        if not (var.secret and var.text) or var.value == "":
            continue
        if len(var.value) < MIN_MASKED_LENGTH:
            too_short.append(var)
            continue
        secrets.append(var.value.encode())
        lines = var.value.splitlines()
        if len(lines) > 1:
            secrets.extend(
                line.encode() for line in lines if len(line.strip()) >= MIN_MASKED_LENGTH
            )
    return MaskPlan(tuple(secrets), tuple(too_short))
