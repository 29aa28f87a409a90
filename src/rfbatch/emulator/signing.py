"""HMAC-signed, expiring URLs that point back at the emulator.

A URL is ``<path>?expires=<unix seconds>&signature=<hex>``; the signature covers the method, the
path and the expiry, never a Content-Type (the reference client sends none). The signing secret
is random per emulator run, so a URL from an earlier run is refused like a forged one.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import time
from collections.abc import Callable, Mapping
from enum import Enum
from urllib.parse import urlencode


class Verdict(Enum):
    OK = "ok"
    BAD_SIGNATURE = "bad-signature"
    EXPIRED = "expired"


class UrlSigner:
    def __init__(self, ttl: float, *, clock: Callable[[], float] = time.time) -> None:
        self._secret = secrets.token_bytes(32)
        self.ttl = ttl
        self._clock = clock
        # expire_all() starts a new generation; a URL signed under an older one is expired.
        self._generation = 0

    def _sig(self, method: str, path: str, expires: str, generation: int) -> str:
        msg = f"{method}\n{path}\n{expires}\n{generation}".encode()
        return hmac.new(self._secret, msg, hashlib.sha256).hexdigest()

    def sign(self, method: str, path: str) -> str:
        """``path`` with the signed query string appended."""
        # Rounded down, so a URL never outlives its ttl (and ttl=0 is expired at once).
        expires = f"{math.floor((self._clock() + self.ttl) * 1000) / 1000:.3f}"
        signature = self._sig(method, path, expires, self._generation)
        return f"{path}?{urlencode({'expires': expires, 'signature': signature})}"

    def verify(self, method: str, path: str, query: Mapping[str, str]) -> Verdict:
        expires = query.get("expires", "")
        signature = query.get("signature", "")
        if not expires or not signature:
            return Verdict.BAD_SIGNATURE
        if not hmac.compare_digest(signature, self._sig(method, path, expires, self._generation)):
            for older in range(self._generation):
                if hmac.compare_digest(signature, self._sig(method, path, expires, older)):
                    return Verdict.EXPIRED
            return Verdict.BAD_SIGNATURE
        try:
            expiry = float(expires)
        except ValueError:
            return Verdict.BAD_SIGNATURE
        if expiry <= self._clock():
            return Verdict.EXPIRED
        return Verdict.OK

    def expire_all(self) -> None:
        """Make every URL issued so far count as expired."""
        self._generation += 1
