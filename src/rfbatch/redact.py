"""Keep secrets out of logs, errors and files.

The API key travels in the ``api_key`` query parameter, and signed URLs carry their signature in
the query string, so any URL that is logged or put into an exception goes through
:func:`redact_url`. Only query values known to be harmless survive; everything else becomes
``***``. :func:`redact_text` scrubs URLs (and a known secret) out of free text such as the ``str``
of a foreign exception.
"""

from __future__ import annotations

import functools
import re
from urllib.parse import parse_qsl, quote, quote_plus, urlsplit, urlunsplit

MASK = "***"

# A known secret is masked in free text only from this length on. The key is always masked
# where it stands as a key (``api_key=...``, in any URL); a short test key such as "k" masked
# everywhere else would garble every word that contains it ("my-wor***flow").
MIN_FREE_TEXT_SECRET = 8

# Query parameters whose values are safe to show: they help an operator and carry no secret.
_SAFE_QUERY_KEYS = frozenset(
    {"pageSize", "partName", "fileName", "displayName", "name", "severity", "nextPageToken"}
)
# A URL ends at white space, a quote or a bracket: "(http://h/x?a=1)" keeps its ")".
_URL_RE = re.compile(r"https?://[^\s'\"<>()\[\]]+")
# key=value pairs that look secret even when they are not inside a full URL.
_SECRET_PAIR_RE = re.compile(
    r"(?i)\b(api_key|apikey|signature|sig|token|x-goog-signature|x-goog-credential|expires)=([^&\s'\"()\[\]]+)"
)


def redact_url(url: str) -> str:
    """Return ``url`` with every query value that could be a secret replaced by ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return MASK
    # Userinfo (user:password@, as in a database URL) is a secret too.
    netloc = parts.netloc.rsplit("@", 1)[-1]
    if not parts.query:
        return (
            url
            if netloc == parts.netloc
            else urlunsplit((parts.scheme, netloc, parts.path, "", ""))
        )
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    query = "&".join(f"{k}={v if k in _SAFE_QUERY_KEYS else MASK}" for k, v in pairs)
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


@functools.lru_cache(maxsize=64)
def _spellings(secret: str) -> tuple[str, ...]:
    """``secret`` as written and as a URL query would carry it, longest first."""
    forms = {secret, quote(secret, safe=""), quote(secret, safe="/"), quote_plus(secret)}
    return tuple(sorted(forms, key=len, reverse=True))


def redact_text(text: str, *secrets: str | None) -> str:
    """Redact every URL in ``text``, secret-looking ``key=value`` pairs, and the given secrets.

    A secret is also masked in its percent-encoded spellings: the key travels in URLs, and a
    foreign message may quote a query without its ``api_key=`` name. A secret shorter than
    :data:`MIN_FREE_TEXT_SECRET` is masked only where it stands as a key (see above).
    """
    text = _URL_RE.sub(lambda m: redact_url(m.group(0)), text)
    text = _SECRET_PAIR_RE.sub(lambda m: f"{m.group(1)}={MASK}", text)
    for secret in secrets:
        if secret and len(secret) >= MIN_FREE_TEXT_SECRET:
            for form in _spellings(secret):
                text = text.replace(form, MASK)
    return text
