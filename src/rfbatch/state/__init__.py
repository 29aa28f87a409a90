"""Durable state: what was seen, packed, sent and fetched, so a restart resumes, never repeats.

Modules:

* :mod:`~rfbatch.state.ledger`: the :class:`~rfbatch.state.ledger.Ledger` interface (one
  protocol per concern, combined) and what each method promises about atomicity and states.
  Code that only needs durable state types against it; the contract tests in ``tests/state``
  run against every implementation.
* :mod:`~rfbatch.state.manifest`: :class:`~rfbatch.state.manifest.SqliteManifest`, the ledger in
  one SQLite file of a state directory, joined from the modules below.
* :mod:`~rfbatch.state.database`: connection, exclusive directory lock, the worker thread,
  transactions, and the helpers that bind values (paths with undecodable bytes included).
* :mod:`~rfbatch.state.files` (files, member names), :mod:`~rfbatch.state.batches` (batches,
  shards), :mod:`~rfbatch.state.downloads`, :mod:`~rfbatch.state.events` (webhook event ids,
  pruned by age as they are recorded): one class per concern.
* :mod:`~rfbatch.state.records`: states, kinds and row types; :mod:`~rfbatch.state.schema`: the
  tables and their migrations.

A source file's state::

    seen → settled → packed → uploading → uploaded → ingested
                                  ↘ failed        (skipped: never sendable, with the reason)

A changed file (size or mtime) goes back to ``seen`` and is sent again; an unchanged file that
was uploaded, ingested or skipped never is. A state change is committed before the action it
promises is taken as done.

Why one worker thread: SQLite calls block, so they must not run on the event loop, and one
connection must never be used by two threads at once. Every call of a
:class:`~rfbatch.state.manifest.SqliteManifest` therefore runs in a worker thread behind a
``CapacityLimiter(1)``: one call at a time, each transaction finished (committed or rolled back)
even if its caller is cancelled. Writes go many rows per transaction so that one thread keeps up.

Errors raised on purpose: :class:`~rfbatch.errors.ConfigError` for a state directory that is in
use, inside a source or of a newer schema, and for a batch id that is invalid or of the other
kind; :class:`~rfbatch.errors.StateError` and its subclasses for everything else.
"""

from __future__ import annotations
