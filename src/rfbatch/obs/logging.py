"""structlog set-up: console lines for people, JSON lines for machines, no secrets in either.

Every log event passes through :func:`_scrub`, which redacts URLs (their query strings carry the
API key and URL signatures) and the configured secrets from every string field, so a careless
``log.info("x", url=url)`` cannot leak. Standard-library loggers (aiohttp, asyncio) are routed
through the same chain. Console lines are for a terminal: :func:`_escape_for_console` shows the
control characters of every text (a hostile file name's ESC or BEL) as escapes, as the CLI's own
output does; JSON lines escape them by being JSON.
"""

from __future__ import annotations

import io
import logging
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any, Literal, TextIO, cast

import structlog

from rfbatch.escapes import printable
from rfbatch.redact import redact_text

LogFormat = Literal["auto", "json", "console"]


class _Scrubber:
    def __init__(self, secrets: Iterable[str]) -> None:
        self.secrets = tuple(s for s in secrets if s)

    def __call__(
        self, _logger: Any, _name: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        for key, value in event_dict.items():
            if isinstance(value, str):
                event_dict[key] = redact_text(value, *self.secrets)
            elif isinstance(value, BaseException):
                event_dict[key] = redact_text(f"{type(value).__name__}: {value}", *self.secrets)
        return event_dict


def _escape_for_console(
    _logger: Any, _name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key, value in event_dict.items():
        if isinstance(value, str):
            # A traceback is lines by nature; any other text is one line.
            event_dict[key] = printable(value, keep_newlines=key == "exception")
    return event_dict


def configure_logging(
    *,
    level: str = "info",
    fmt: LogFormat = "auto",
    secrets: Iterable[str] = (),
    stream: TextIO | None = None,
) -> None:
    """Configure structlog and stdlib logging once, at the start of a command.

    Without ``stream``, lines go to whatever ``sys.stderr`` is when each is written: while a
    progress display is live it stands in for stderr and prints each line above the bars, so
    log lines never tear them.
    """
    out = stream if stream is not None else cast(TextIO, _CurrentStderr())
    use_json = fmt == "json" or (fmt == "auto" and not out.isatty())
    scrub = _Scrubber(secrets)
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=out.isatty())
    )
    last: list[Any] = [scrub] if use_json else [scrub, _escape_for_console]
    numeric = logging.getLevelNamesMapping()[level.upper()]
    structlog.configure(
        processors=[*shared, *last, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                *last,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    # Library chatter is only interesting when something is wrong.
    root.setLevel(max(numeric, logging.WARNING))


class _CurrentStderr(io.TextIOBase):
    """``sys.stderr`` as it is at each write, not as it was at start-up."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:
        return sys.stderr.isatty()


def get_logger(name: str | None = None) -> Any:
    """A structlog logger; ``name`` is bound as ``logger`` for filtering."""
    log = structlog.get_logger()
    return log.bind(logger=name) if name else log
