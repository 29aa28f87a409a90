"""Prometheus metrics, read at scrape time from the objects that already count things.

Stages keep their own counters (the :class:`~rfbatch.obs.tally.Tally`, the client's retry
counts, the transfer statistics, stream statistics); this collector turns a snapshot of them into
metric families when ``/metrics`` is scraped. Nothing on the hot path calls into Prometheus, and
there is one registry per process object rather than the library's global one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass
class MetricsSnapshot:
    """Everything one scrape reports; filled by the daemon right before rendering."""

    files: Mapping[str, int] = field(default_factory=dict)  # discovered, uploaded, skipped, ...
    bytes_up: int = 0
    bytes_down: int = 0
    shards: int = 0
    retries: Mapping[str, int] = field(default_factory=dict)  # by reason
    queue_depth: Mapping[str, int] = field(default_factory=dict)  # by stage
    in_flight: Mapping[str, int] = field(default_factory=dict)  # by kind
    batches: Mapping[str, int] = field(default_factory=dict)  # by state
    jobs: Mapping[str, int] = field(default_factory=dict)  # by state
    webhook_events: Mapping[str, int] = field(default_factory=dict)  # by result
    downloads: Mapping[str, int] = field(default_factory=dict)  # by state
    intake_paused: bool = False
    watch_polling: bool = False
    watch_limit_reached: bool = False
    concurrency: Mapping[str, int] = field(default_factory=dict)  # limit by direction
    ledger_files: Mapping[str, int] = field(default_factory=dict)  # the whole fleet's, by state
    fleet_workers: Mapping[str, int] = field(default_factory=dict)  # live / gone


class _SnapshotCollector(Collector):
    def __init__(self, snapshot: Callable[[], MetricsSnapshot]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterable[Metric]:
        s = self._snapshot()
        yield _labelled(
            CounterMetricFamily, "rfbatch_files", "Files by outcome.", "outcome", s.files
        )
        up = CounterMetricFamily("rfbatch_bytes_uploaded", "Bytes put on the wire to storage.")
        up.add_metric([], s.bytes_up)
        yield up
        down = CounterMetricFamily("rfbatch_bytes_downloaded", "Bytes of results downloaded.")
        down.add_metric([], s.bytes_down)
        yield down
        shards = CounterMetricFamily("rfbatch_shards_uploaded", "Tar shards uploaded.")
        shards.add_metric([], s.shards)
        yield shards
        yield _labelled(
            CounterMetricFamily, "rfbatch_retries", "Retries by reason.", "reason", s.retries
        )
        yield _labelled(
            CounterMetricFamily,
            "rfbatch_webhook_events",
            "Webhook deliveries by result.",
            "result",
            s.webhook_events,
        )
        yield _labelled(
            GaugeMetricFamily,
            "rfbatch_queue_depth",
            "Items waiting per stage.",
            "stage",
            s.queue_depth,
        )
        yield _labelled(
            GaugeMetricFamily, "rfbatch_in_flight", "Transfers under way.", "kind", s.in_flight
        )
        yield _labelled(
            GaugeMetricFamily, "rfbatch_batches", "Batches by state.", "state", s.batches
        )
        yield _labelled(GaugeMetricFamily, "rfbatch_jobs", "Jobs by state.", "state", s.jobs)
        yield _labelled(
            GaugeMetricFamily, "rfbatch_downloads", "Result files by state.", "state", s.downloads
        )
        yield _labelled(
            GaugeMetricFamily,
            "rfbatch_transfer_concurrency",
            "Transfers allowed at once, by direction (adaptive: grows while throughput grows).",
            "direction",
            s.concurrency,
        )
        yield _labelled(
            GaugeMetricFamily,
            "rfbatch_ledger_files",
            "Files in the ledger by state: the whole fleet's backlog, not only this worker's.",
            "state",
            s.ledger_files,
        )
        yield _labelled(
            GaugeMetricFamily,
            "rfbatch_fleet_workers",
            "Workers sharing the ledger: live (lease held) or gone.",
            "state",
            s.fleet_workers,
        )
        paused = GaugeMetricFamily("rfbatch_intake_paused", "1 while intake waits for disk.")
        paused.add_metric([], 1.0 if s.intake_paused else 0.0)
        yield paused
        polling = GaugeMetricFamily(
            "rfbatch_watch_polling",
            "1 while new files are found by quick rescans, not events ([scan] events = false, "
            "or no inotify watches left).",
        )
        polling.add_metric([], 1.0 if s.watch_polling else 0.0)
        yield polling
        limit = GaugeMetricFamily(
            "rfbatch_watch_limit_reached",
            "1 once the watcher had no inotify watches left for some folders "
            "(fs.inotify.max_user_watches); 0 with events working, or [scan] events = false.",
        )
        limit.add_metric([], 1.0 if s.watch_limit_reached else 0.0)
        yield limit


def _labelled(
    kind: type[CounterMetricFamily] | type[GaugeMetricFamily],
    name: str,
    doc: str,
    label: str,
    values: Mapping[str, int],
) -> Metric:
    family = kind(name, doc, labels=[label])
    for key, value in sorted(values.items()):
        family.add_metric([key], value)
    return family


class Metrics:
    """A registry bound to a snapshot provider; :meth:`render` gives the exposition text."""

    def __init__(self, snapshot: Callable[[], MetricsSnapshot]) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_SnapshotCollector(snapshot))

    def render(self) -> bytes:
        return generate_latest(self.registry)
