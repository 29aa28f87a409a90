"""An untrusted certificate stops the run, on storage exactly as on the API.

The same certificate fails the same way for every shard and every file, so retrying it or going
on with the next item only repeats the failure: the transfer raises a FatalError, and ``upload``
and ``export`` stop with one line that names the TLS failure and how to trust a private CA.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from rfbatch.api import RoboflowClient
from rfbatch.api.schemas import SignedUrl
from rfbatch.emulator import Emulator
from rfbatch.errors import FatalApiError, FatalError, StorageCertificateError
from rfbatch.http.retry import RetryEvent
from rfbatch.transfer import BytesBody, Transfer, TransferConfig
from tests.api.support import client_config
from tests.conftest import API_KEY
from tests.e2e.support import cli_env, make_tree, run_cli
from tests.export.support import export_env, export_settings, fast_services, images, stage_sharded
from tests.transfer.untrusted import UntrustedStorage, api_front, untrusted_storage

SECRET_QUERY = "X-Goog-Signature=0123456789abcdef"


@pytest.fixture
async def storage(tmp_path: Path) -> AsyncIterator[UntrustedStorage]:
    try:
        async with untrusted_storage(tmp_path) as served:
            yield served
    except FileNotFoundError:
        pytest.skip("the openssl command is not installed")


def error_lines(done: subprocess.CompletedProcess[bytes]) -> list[str]:
    return [line for line in done.stderr.decode().splitlines() if line.startswith("rfbatch: ")]


def events(done: subprocess.CompletedProcess[bytes]) -> list[str]:
    found = []
    for line in done.stderr.decode().splitlines():
        if line.startswith("{"):
            found.append(json.loads(line).get("event", ""))
    return found


def assert_names_the_tls_failure(message: str) -> None:
    assert "TLS certificate verification failed for 127.0.0.1" in message
    assert "set [api] ca_bundle" in message
    assert "0123456789abcdef" not in message  # the signature stays out of it


async def test_a_put_to_an_untrusted_storage_host_stops_at_once(
    storage: UntrustedStorage, transfer_config: TransferConfig
) -> None:
    retries: list[RetryEvent] = []
    signed = SignedUrl(uploadURL=f"{storage.origin}/bucket/shard.tar?{SECRET_QUERY}")

    async with Transfer(transfer_config, on_retry=retries.append) as transfer:
        with pytest.raises(StorageCertificateError) as caught:
            await transfer.put(signed, BytesBody(b"x" * 100), refresh=lambda: _same(signed))

    assert isinstance(caught.value, FatalError)
    assert caught.value.args[0].startswith("PUT: ")
    assert_names_the_tls_failure(str(caught.value))
    assert retries == []  # neither retried nor sent to a fresh URL
    assert storage.requests == []  # nothing crossed the unverified connection


async def test_a_download_from_an_untrusted_storage_host_stops_at_once(
    storage: UntrustedStorage, transfer_config: TransferConfig, tmp_path: Path
) -> None:
    retries: list[RetryEvent] = []
    dest = tmp_path / "file.part"

    async with Transfer(transfer_config, on_retry=retries.append) as transfer:
        with pytest.raises(StorageCertificateError) as caught:
            await transfer.download(f"{storage.origin}/bucket/a.jpg?{SECRET_QUERY}", dest)

    assert isinstance(caught.value, FatalError)
    assert caught.value.args[0].startswith("download: ")
    assert_names_the_tls_failure(str(caught.value))
    assert retries == []
    assert storage.requests == []
    assert not dest.exists()


async def test_the_api_and_storage_meet_an_untrusted_certificate_the_same_way(
    storage: UntrustedStorage, transfer_config: TransferConfig, tmp_path: Path
) -> None:
    retries: list[RetryEvent] = []
    config = client_config(storage.origin, API_KEY)

    async with RoboflowClient(config, on_retry=retries.append) as client:
        with pytest.raises(FatalApiError) as api:
            await client.workspace()
    async with Transfer(transfer_config, on_retry=retries.append) as transfer:
        with pytest.raises(StorageCertificateError) as store:
            await transfer.download(f"{storage.origin}/a.jpg?{SECRET_QUERY}", tmp_path / "a")

    host = storage.origin.removeprefix("https://")
    for caught in (api.value, store.value):
        assert isinstance(caught, FatalError)
        assert f"TLS certificate verification failed for {host} " in str(caught)
        assert API_KEY not in str(caught)
    assert retries == []
    assert storage.requests == []


async def test_the_ca_bundle_of_the_hint_makes_the_same_host_trusted(
    storage: UntrustedStorage, transfer_config: TransferConfig
) -> None:
    signed = SignedUrl(uploadURL=f"{storage.origin}/bucket/shard.tar?{SECRET_QUERY}")
    trusting = TransferConfig(retry=transfer_config.retry, ca_bundle=storage.cert)

    async with Transfer(trusting) as transfer:
        sent = await transfer.put(signed, BytesBody(b"x" * 100))

    assert sent == 100
    assert storage.requests == ["/bucket/shard.tar"]


async def test_upload_stops_with_one_line_instead_of_failing_each_shard(
    emulator: Emulator, storage: UntrustedStorage, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    make_tree(src, 24)
    async with api_front(emulator.base_url, storage.origin) as front:
        env = cli_env(emulator, tmp_path / "state")
        env.update(API_BASE_URL=front, RFBATCH_UPLOAD__SHARD_MAX_FILES="3")
        done = await run_cli(["upload", str(src), "--batch", "tls-up", "--json"], env)

    assert done.returncode == 3
    lines = error_lines(done)
    assert len(lines) == 1, done.stderr.decode()[-3000:]
    assert lines[0].startswith("rfbatch: error: PUT: ")
    assert_names_the_tls_failure(lines[0])
    assert "upload.failed" not in events(done)  # no shard was given up one after another
    assert "transfer.retry" not in events(done)
    assert "Traceback" not in done.stderr.decode()
    assert API_KEY not in done.stderr.decode()
    assert storage.requests == []


async def test_export_stops_with_one_line_instead_of_failing_each_file(
    emulator: Emulator, storage: UntrustedStorage, tmp_path: Path
) -> None:
    settings = export_settings(emulator.base_url, tmp_path / "stage-state")
    async with fast_services(settings) as services:
        await stage_sharded(services, "tls-down", images(12))
    out = tmp_path / "out"

    async with api_front(emulator.base_url, storage.origin) as front:
        env = export_env(front, tmp_path / "state")
        done = await run_cli(["export", "tls-down", "--output", str(out), "--json"], env)

    assert done.returncode == 3
    lines = error_lines(done)
    assert len(lines) == 1, done.stderr.decode()[-3000:]
    assert lines[0].startswith("rfbatch: error: download: ")
    assert_names_the_tls_failure(lines[0])
    assert "export.file_failed" not in events(done)
    assert "transfer.retry" not in events(done)
    assert "Traceback" not in done.stderr.decode()
    assert storage.requests == []
    assert not out.exists() or not any(p.is_file() for p in out.rglob("*"))


async def _same(signed: SignedUrl) -> SignedUrl:
    return signed
