"""The HTTP layer shared by the API client and the signed-URL transfer.

Everything both sides must do the same way lives here: the aiohttp session (TLS, connector,
timeouts), the retry loop and its policy, which statuses and failures are worth retrying, and how
a failure with no HTTP status (a timeout, a refused connection, an untrusted certificate) becomes
an rfbatch error without leaking a URL's query string.
"""
