"""An offline emulator of the Roboflow Batch Processing and Data Staging APIs.

Start one with :func:`running_emulator` (in the current loop), :func:`emulator_in_thread` (for
sync code and subprocess peers) or :func:`serve` (blocking; ``rfbatch emulator``). Point a client
at ``Emulator.base_url`` with the configured API key. ``GET /_emulator/state`` (loopback only)
shows what arrived; :class:`FaultProfile` injects failures.

It plays the service, so it never leans on the client: it imports only rfbatch's base modules
(``rfbatch.redact``) and its own package.

Modules:

- ``server``: the :class:`Emulator` handle and its test hooks; the three ways to run one.
- ``app``: the aiohttp application: routes, API-key check, fault injection, error rendering.
- ``config``: :class:`EmulatorConfig`, the one frozen configuration object.
- ``core``: ``EmulatorCore``, the state of a running emulator that every route shares.
- ``routes_staging``: data-staging routes: batches, listings, uploads, signed URLs, references.
- ``routes_jobs``: batch-processing routes: start, status, stages, tasks, abort, restart, logs.
- ``routes_roboql``: RoboQL ingest: a batch built from a small built-in asset library.
- ``routes_transfer``: signed-URL PUTs and downloads, and ``GET /_emulator/state``.
- ``responses``: JSON answers (``ok``, ``fail``, ``paged``) and ``Problem``, a handler's error.
- ``model``: batches, items, shards, parts, counters and the store that holds them.
- ``pagination``: tamper-evident page tokens over append-only lists.
- ``signing``: HMAC-signed, expiring URLs that point back at the emulator.
- ``pipe``: streams a request body to a blocking consumer in a worker thread.
- ``sinks``: those consumers: store a body as a blob, unpack a tar shard into blobs.
- ``tarstream``: a fast forward-only tar reader for shard bodies.
- ``ingest``: background ingest of tar shards and references, with their webhooks.
- ``job_model``: the records of a job: ``Job``, ``Stage``, ``Task``, ``LogEntry``.
- ``job_requests``: what a job start or restart request may hold (``JobRequestError``).
- ``job_engine``: ``JobEngine``, the jobs' lifecycle and the clock that runs their stages.
- ``job_outputs``: a workflow job's results files, export archives and output batches.
- ``webhooks``: webhook delivery with a bearer token and bounded retries.
- ``faults``: seedable per-route fault profiles and the injector that draws from them.
- ``persist``: keeps the records across restarts on a chosen ``state_dir``.
- ``tasks``: the background work (ingests, job runners, webhooks), cancelled on shutdown.
- ``tls``: HTTPS: a private CA and a certificate for the loopback names, made at start.
- ``link``: a shaped network link in front of it (round trips, handshakes, bandwidth).
"""

from __future__ import annotations

from rfbatch.emulator.app import create_app
from rfbatch.emulator.config import EmulatorConfig
from rfbatch.emulator.faults import FaultProfile, FaultRates
from rfbatch.emulator.server import Emulator, emulator_in_thread, running_emulator, serve

__all__ = [
    "Emulator",
    "EmulatorConfig",
    "FaultProfile",
    "FaultRates",
    "create_app",
    "emulator_in_thread",
    "running_emulator",
    "serve",
]
