"""``rfbatch emulator``: the offline Roboflow Batch Processing API."""

from __future__ import annotations

import sys
import tempfile
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from rfbatch.cli.common import EXIT_USAGE, fail
from rfbatch.errors import ConfigError


class Store(StrEnum):
    files = "files"
    digests = "digests"


def emulator(
    host: Annotated[str, typer.Option(help="Address to bind; keep it on loopback.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port; 0 picks a free one (the URL printed says).")] = 0,
    api_key: Annotated[
        str,
        typer.Option(
            envvar="ROBOFLOW_API_KEY", help="The key clients must send.", show_default=False
        ),
    ] = "emulator-key",
    workspace: Annotated[str, typer.Option(help="Workspace slug.")] = "emulator-ws",
    faults: Annotated[
        Path | None, typer.Option(help="TOML fault profile (see rfbatch.emulator.faults).")
    ] = None,
    state_dir: Annotated[
        Path | None, typer.Option(help="Where to keep what arrives; a temporary dir if unset.")
    ] = None,
    store: Annotated[
        Store, typer.Option(help="files keeps the bytes; digests keeps only size and SHA-256.")
    ] = Store.files,
    ingest_delay: Annotated[float, typer.Option(help="Seconds before a shard is ingested.")] = 0.0,
    job_tick: Annotated[float, typer.Option(help="Seconds per job clock tick.")] = 0.05,
    check_image_content: Annotated[
        bool,
        typer.Option(help="Fail tar members whose bytes are not an image, as a service would."),
    ] = False,
    max_upload_bytes: Annotated[
        int,
        typer.Option(
            min=1, help="The largest body a signed URL takes; over it: 400 EntityTooLarge."
        ),
    ] = 5 * 1024**3,
    tls: Annotated[
        bool,
        typer.Option(help="Serve HTTPS with a CA made at start; clients trust <state-dir>/ca.pem."),
    ] = False,
    tls_cert: Annotated[
        Path | None, typer.Option(help="HTTPS with this certificate chain (PEM) instead.")
    ] = None,
    tls_key: Annotated[Path | None, typer.Option(help="The private key of --tls-cert.")] = None,
    link: Annotated[
        str | None,
        typer.Option(help="A shaped link: rtt=40ms,conn=25MB/s,total=100MB/s (parts optional)."),
    ] = None,
) -> None:
    """Serve the Roboflow Batch Processing API offline.

    Prints its base URL, then serves until SIGINT or SIGTERM.
    """
    from rfbatch.emulator import EmulatorConfig, FaultProfile, serve
    from rfbatch.emulator.link import LinkProfile
    from rfbatch.emulator.tls import TlsFiles, make_certificates

    try:
        profile = FaultProfile.from_toml(faults) if faults else None
    except (OSError, ValueError, ConfigError) as exc:
        fail(f"fault profile {faults}: {exc}", EXIT_USAGE)
    try:
        shaped = LinkProfile.parse(link) if link else None
    except ValueError as exc:
        fail(f"--link: {exc}", EXIT_USAGE)
    if (tls_cert is None) != (tls_key is None):
        fail("--tls-cert and --tls-key go together", EXIT_USAGE)
    if tls_cert is not None and tls_key is not None:
        certificates: TlsFiles | None = TlsFiles(tls_cert, tls_key)
    elif tls:
        if state_dir is None:
            state_dir = Path(tempfile.mkdtemp(prefix="rfbatch-emulator-"))
        certificates = make_certificates(state_dir)
        print(f"rfbatch emulator: clients must trust {certificates.ca}", file=sys.stderr)
    else:
        certificates = None
    serve(
        EmulatorConfig(
            api_key=api_key,
            workspace=workspace,
            host=host,
            port=port,
            state_dir=state_dir,
            store=store.value,
            faults=profile,
            ingest_delay=ingest_delay,
            job_tick=job_tick,
            check_image_content=check_image_content,
            max_upload_bytes=max_upload_bytes,
            tls=certificates,
            link=shaped,
        )
    )
