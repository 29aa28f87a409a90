"""No API key and no signed-URL signature in any log line, exception text or repr of a bad run."""

from __future__ import annotations

import logging
import socket
import traceback
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from structlog.testing import capture_logs

from rfbatch.api import RetryPolicy, RoboflowClient
from rfbatch.emulator import Emulator, FaultProfile, FaultRates
from rfbatch.errors import RfbatchError
from rfbatch.transfer import BytesBody, Transfer, TransferConfig
from tests.api.support import client_config, image_bytes

QUICK = RetryPolicy(attempts=3, timeout=10, wait_initial=0.001, wait_max=0.01, wait_jitter=0.001)


def secret_values(url: str) -> list[str]:
    """Every query value of a signed URL: the signature, expiry and anything else in there."""
    return [v for _, v in parse_qsl(urlsplit(url).query) if len(v) >= 6]


def exception_texts(exc: BaseException) -> list[str]:
    return [str(exc), repr(exc), "".join(traceback.format_exception(exc))]


async def test_a_failing_run_leaks_nothing(
    emulator: Emulator, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    caplog.set_level(logging.DEBUG)
    key = emulator.config.api_key
    texts: list[str] = []
    signatures: list[str] = []

    with capture_logs() as logs:
        # 1. A wrong key.
        wrong = "wrong-key-0987654321"
        async with RoboflowClient(client_config(emulator.base_url, wrong)) as bad:
            with pytest.raises(RfbatchError) as unauthorized:
                await bad.workspace()
        texts += exception_texts(unauthorized.value)
        texts.append(repr(bad.config))

        config = client_config(emulator.base_url, key, retry=QUICK)
        texts.append(repr(config))
        async with RoboflowClient(config) as client, Transfer(TransferConfig(retry=QUICK)) as tx:
            texts.append(repr(client))
            await client.upload_image("leak-b", "a.jpg", image_bytes("a"))

            # 2. Transient failures until the retries run out, on the API...
            emulator.set_faults(FaultProfile(routes={"count": FaultRates(status_503=1.0)}))
            with pytest.raises(RfbatchError) as exhausted:
                await client.count("leak-b")
            texts += exception_texts(exhausted.value)
            emulator.set_faults(None)

            # ... on a signed-URL PUT cut mid-body, and on a refused PUT ...
            signed = await client.video_upload_url("leak-v", "v.mp4")
            signatures += secret_values(signed.upload_url)
            texts.append(repr(signed))
            emulator.set_faults(FaultProfile(routes={"put": FaultRates(reset=1.0)}))
            with pytest.raises(RfbatchError) as put_reset:
                await tx.put(signed, BytesBody(b"v" * 3_000_000))
            texts += exception_texts(put_reset.value)
            emulator.set_faults(FaultProfile(routes={"put": FaultRates(expire=1.0)}))
            with pytest.raises(RfbatchError) as put_refused:
                await tx.put(signed, BytesBody(b"v" * 1000))
            texts += exception_texts(put_refused.value)

            # ... and on downloads: truncated every time, then refused.
            emulator.set_faults(None)
            listed = await client.list_files("leak-b").collect()
            texts += [repr(f) for f in listed]
            url = listed[0].download_url
            signatures += secret_values(url)
            assert await tx.download(url, tmp_path / "ok.part") == len(image_bytes("a"))
            emulator.set_faults(FaultProfile(routes={"download": FaultRates(truncate=1.0)}))
            with pytest.raises(RfbatchError) as truncated:
                await tx.download(url, tmp_path / "a.part")
            texts += exception_texts(truncated.value)
            emulator.set_faults(FaultProfile(routes={"download": FaultRates(expire=1.0)}))
            with pytest.raises(RfbatchError) as refused:
                await tx.download(url, tmp_path / "a.part")
            texts += exception_texts(refused.value)
            emulator.set_faults(None)

        # 3. Nobody listening.
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        async with RoboflowClient(client_config(f"http://127.0.0.1:{port}", key)) as gone:
            with pytest.raises(RfbatchError) as refused_conn:
                await gone.workspace()
        texts += exception_texts(refused_conn.value)

    assert signatures, "the emulator's signed URLs carry query secrets"
    records: list[Any] = [repr(entry) for entry in logs]
    for record in caplog.records:
        records.append(record.getMessage())
        records.append(repr(record.args))
        if record.exc_info:
            records.append("".join(traceback.format_exception(*record.exc_info)))
    assert any("api.retry" in r for r in records)
    assert any("transfer.retry" in r for r in records)
    everything = "\n".join([*texts, *records])
    for secret in (key, wrong, *signatures):
        assert secret not in everything, f"a secret leaked: {secret[:4]}..."
