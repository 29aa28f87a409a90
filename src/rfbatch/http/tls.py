"""TLS for every HTTP session: verification always on, plus an optional private CA bundle."""

from __future__ import annotations

import os
import ssl
from pathlib import Path

from rfbatch.errors import ConfigError

CA_HINT = (
    "if it uses a private CA, set [api] ca_bundle (RFBATCH_API__CA_BUNDLE) to a PEM file of it"
)


def tls_context(ca_bundle: Path | None) -> ssl.SSLContext | bool:
    """``True`` (the system's trust store) or a context trusting the PEM bundle given.

    The bundle is ``ca_bundle`` ([api] ca_bundle), else ``REQUESTS_CA_BUNDLE`` (the variable
    the official client's HTTP library reads). The system store itself honours
    ``SSL_CERT_FILE`` and ``SSL_CERT_DIR``. Blocking (it reads the file): call it from a worker
    thread.
    """
    source = "ca_bundle"
    if ca_bundle is None and os.environ.get("REQUESTS_CA_BUNDLE"):
        ca_bundle, source = Path(os.environ["REQUESTS_CA_BUNDLE"]), "REQUESTS_CA_BUNDLE"
    if ca_bundle is None:
        return True
    if not ca_bundle.is_file():
        raise ConfigError(f"{source} {ca_bundle} is not a readable file")
    try:
        return ssl.create_default_context(cafile=str(ca_bundle))
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise ConfigError(
            f"{source} {ca_bundle} holds no usable PEM certificate ({type(exc).__name__})"
        ) from None
