"""The old home of the retry loop, now :mod:`rfbatch.http.retry`.

Kept only while ``tests/reliability/support_a.py`` still imports ``RetryEvent`` from here;
delete this module once that import reads ``from rfbatch.api import RetryEvent``.
"""

from __future__ import annotations

from rfbatch.http.retry import RetryEvent

__all__ = ["RetryEvent"]
