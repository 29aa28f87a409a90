"""TLS for every HTTP session: verification always on, plus an optional private CA bundle."""

from __future__ import annotations

import ssl
from pathlib import Path

from rfbatch.errors import ConfigError

CA_HINT = (
    "if it uses a private CA, set [api] ca_bundle (RFBATCH_API__CA_BUNDLE) to a PEM file of it"
)


def tls_context(ca_bundle: Path | None) -> ssl.SSLContext | bool:
    """``True`` (the system's trust store) or a context trusting ``ca_bundle`` too.

    Blocking (it reads the file): call it from a worker thread.
    """
    if ca_bundle is None:
        return True
    if not ca_bundle.is_file():
        raise ConfigError(f"ca_bundle {ca_bundle} is not a readable file")
    try:
        return ssl.create_default_context(cafile=str(ca_bundle))
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise ConfigError(
            f"ca_bundle {ca_bundle} holds no usable PEM certificate ({type(exc).__name__})"
        ) from None
