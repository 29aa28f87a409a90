"""``rfbatch status``: the ledger as a fleet sees it: workers, their heartbeats and claims, and
the backlog per state. Reads only: it never joins the fleet, and needs no API key."""

from __future__ import annotations

import dataclasses
import sys

from rfbatch.app import open_ledger
from rfbatch.cli.common import EXIT_OK, run, settings_from
from rfbatch.cli.options import ConfigOpt, JsonOpt, LogFormatOpt, LogLevelOpt, StateDirOpt
from rfbatch.cli.render import print_report, table
from rfbatch.state.fleet import FleetStatus, fleet_of


def status(
    json_out: JsonOpt = False,
    config: ConfigOpt = None,
    state_dir: StateDirOpt = None,
    log_level: LogLevelOpt = None,
    log_format: LogFormatOpt = None,
) -> None:
    """Show the workers sharing the ledger, what each holds, and the backlog per state."""
    settings = settings_from(
        config, {"state": {"dir": state_dir}}, log_level=log_level, log_format=log_format
    )

    async def main() -> int:
        # Not exclusive: a daemon may be using the ledger, and looking must not count as work.
        ledger = await open_ledger(settings, exclusive=False)
        async with ledger:
            found = await fleet_of(ledger).fleet_status()
        report(found, settings.state.url or str(settings.state.dir), json_out)
        return EXIT_OK

    run(main)


def report(found: FleetStatus, where: str, json_out: bool) -> None:
    if json_out:
        print_report(
            {
                "ledger": where,
                "shared": found.shared,
                "workers": [dataclasses.asdict(w) for w in found.workers],
                "files": found.files,
                "batches": found.batches,
                "unclaimed": found.unclaimed,
            }
        )
        return
    out = sys.stdout
    out.write(f"ledger: {where} ({'shared by a fleet' if found.shared else 'one worker'})\n")
    if found.shared:
        out.write(f"workers: {sum(w.live for w in found.workers)} live\n")
        table(
            [
                {
                    "worker": w.worker_id,
                    "host": w.host,
                    "pid": w.pid,
                    "heartbeat": f"{w.heartbeat_age:.0f}s ago",
                    "lease": "live" if w.live else ("stopped" if w.stopped else "lapsed"),
                    "files held": w.files_claimed,
                    "batches held": w.batches_claimed,
                }
                for w in found.workers
            ],
            ["worker", "host", "pid", "heartbeat", "lease", "files held", "batches held"],
        )
        if found.unclaimed:
            out.write(f"files left by gone workers, to be adopted: {found.unclaimed}\n")
    out.write("files: " + ", ".join(f"{s} {n}" for s, n in found.files.items()) + "\n")
    out.write(
        "batches: " + (", ".join(f"{s} {n}" for s, n in found.batches.items()) or "none") + "\n"
    )
    out.flush()
