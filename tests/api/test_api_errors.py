"""Status codes and bodies map to the rfbatch error tree (contract 1.5)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest
from aiohttp import web

from rfbatch.api import RoboflowClient
from rfbatch.api.schemas import ImageJobSpec
from rfbatch.emulator import Emulator
from rfbatch.errors import (
    BadRequestError,
    ConfigError,
    ConflictError,
    DecodeError,
    FatalApiError,
    ForbiddenError,
    NotFoundError,
    UnauthorizedError,
)
from rfbatch.http.statuses import parse_retry_after
from tests.api.stub import Handler, StubServer, stub_server
from tests.api.support import client_config, image_bytes

KEY = "stub-secret-key-42"


@asynccontextmanager
async def stub_client(handler: Handler) -> AsyncIterator[tuple[StubServer, RoboflowClient]]:
    async with (
        stub_server(handler) as stub,
        RoboflowClient(client_config(stub.base_url, KEY)) as client,
    ):
        yield stub, client


def routed(workspace_ok: bool = True, **by_suffix: Handler) -> Handler:
    """Answer ``GET /`` with a workspace, and other paths by their last segment."""

    async def handle(request: web.Request) -> web.StreamResponse:
        if request.path == "/" and workspace_ok:
            return web.json_response({"workspace": "ws"})
        suffix = request.path.rstrip("/").rsplit("/", 1)[-1]
        return await by_suffix[suffix](request)

    return handle


def answer(status: int, body: str | bytes, content_type: str = "application/json") -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        raw = body.encode() if isinstance(body, str) else body
        return web.Response(status=status, body=raw, content_type=content_type)

    return handle


async def test_wrong_key_is_unauthorized(emulator: Emulator) -> None:
    config = client_config(emulator.base_url, "not-the-key-1234567")
    async with RoboflowClient(config) as client:
        with pytest.raises(UnauthorizedError) as info:
            await client.workspace()
    err = info.value
    assert isinstance(err, FatalApiError)
    assert err.status == 401
    assert "not-the-key-1234567" not in str(err)
    assert "ROBOFLOW_API_KEY" in str(err)


async def test_unknown_batch_and_job_are_not_found(client: RoboflowClient) -> None:
    with pytest.raises(NotFoundError) as batch:
        await client.get_batch("no-such-batch")
    assert batch.value.status == 404
    with pytest.raises(NotFoundError):
        await client.get_job("no-such-job")


async def test_same_job_id_with_another_definition_conflicts(client: RoboflowClient) -> None:
    await client.upload_image("conf-in", "a.jpg", image_bytes("a"))
    await client.start_job("job-c", ImageJobSpec(batch_id="conf-in", workflow_id="one"))
    with pytest.raises(ConflictError) as info:
        await client.start_job("job-c", ImageJobSpec(batch_id="conf-in", workflow_id="two"))
    assert info.value.status == 409


async def test_emulator_bad_job_body_message_reaches_the_error(client: RoboflowClient) -> None:
    # The input batch does not exist: the emulator answers 400 {"message": ...}.
    with pytest.raises(BadRequestError) as info:
        await client.start_job("job-bad", ImageJobSpec(batch_id="missing-in", workflow_id="w"))
    assert info.value.status == 400
    assert "missing-in" in str(info.value)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("status", "body", "expected", "text"),
    [
        (400, '{"error": "batch id is odd"}', BadRequestError, "batch id is odd"),
        (400, '{"message": "\\"value\\" does not match"}', BadRequestError, '"value" does not'),
        (422, '{"error": {"message": "nested words", "type": "x"}}', BadRequestError, "nested"),
        (400, "<html><body>Bad   gateway\nstuff</body></html>", BadRequestError, "Bad gateway"),
        (402, '{"error": "Batch processing is not enabled"}', ForbiddenError, "not enabled"),
        (403, '{"error": "forbidden"}', ForbiddenError, "forbidden"),
        (404, '{"error": "no batch"}', NotFoundError, "no batch"),
        (409, '{"error": "exists"}', ConflictError, "exists"),
    ],
)
async def test_status_and_body_map_to_errors(
    status: int, body: str, expected: type[Exception], text: str
) -> None:
    async with stub_client(routed(count=answer(status, body, "text/html"))) as (stub, client):
        with pytest.raises(expected) as info:
            await client.count("some-batch")
    assert text in str(info.value)
    assert "count" in str(info.value)
    assert KEY not in str(info.value)
    assert len(stub.requests) == 2  # not retried


async def test_an_echoed_key_is_redacted_from_the_message() -> None:
    handler = routed(count=answer(400, f'{{"error": "bad key {KEY} for count"}}'))
    async with stub_client(handler) as (_, client):
        with pytest.raises(BadRequestError) as info:
            await client.count("b")
    assert KEY not in str(info.value)
    assert "bad key *** for count" in str(info.value)


async def test_long_error_bodies_are_clipped() -> None:
    handler = routed(count=answer(400, "x" * 10_000, "text/plain"))
    async with stub_client(handler) as (_, client):
        with pytest.raises(BadRequestError) as info:
            await client.count("b")
    assert len(str(info.value)) < 600


@pytest.mark.anyio
@pytest.mark.parametrize(
    "body",
    [
        b"this is not json",
        b'{"count": "many"}',
        b'{"total": 3}',
        b"[1, 2, 3]",
    ],
)
async def test_bodies_that_break_the_contract_are_decode_errors(body: bytes) -> None:
    async with stub_client(routed(count=answer(200, body))) as (stub, client):
        with pytest.raises(DecodeError) as info:
            await client.count("b")
    assert "count" in str(info.value)
    assert len(stub.requests) == 2  # a decode error is not retried


async def test_decode_error_does_not_echo_signed_urls() -> None:
    signed = "http://bucket.local/obj?X-Goog-Signature=SIGSIGSIG&X-Goog-Credential=CRED"
    body = f'{{"filesMetadata": [{{"downloadURL": "{signed}", "fileName": 7}}]}}'
    async with stub_client(routed(list=answer(200, body))) as (_, client):
        with pytest.raises(DecodeError) as info:
            await client.list_files("b").collect()
    message = str(info.value)
    assert "SIGSIGSIG" not in message
    assert "CRED" not in message
    assert "filesMetadata.0" in message


async def test_workspace_shape_error() -> None:
    async with stub_client(answer(200, '{"status": "ok"}')) as (_, client):
        with pytest.raises(DecodeError, match="workspace"):
            await client.workspace()


async def test_repeating_page_token_is_a_decode_error_naming_the_endpoint() -> None:
    body = (
        '{"batches": [{"displayName": "d", "batchId": "b", "batchType": "simple-batch",'
        ' "batchContentType": "images", "createdDate": "2026-01-01T00:00:00Z",'
        ' "expiryDate": "2026-01-08T00:00:00Z"}], "nextPageToken": "again"}'
    )
    async with stub_client(routed(batches=answer(200, body))) as (stub, client):
        with pytest.raises(DecodeError, match="list_batches"):
            await client.list_batches().collect()
    pages = [r for r in stub.requests if r.path.endswith("/batches")]
    assert len(pages) == 2
    assert "nextPageToken" not in pages[0].query
    assert pages[1].query["nextPageToken"] == "again"


async def test_invalid_ids_fail_before_any_request() -> None:
    async with stub_client(routed()) as (stub, client):
        with pytest.raises(ConfigError):
            await client.get_batch("Bad Batch!")
        with pytest.raises(ConfigError):
            client.list_files("x" * 65)
        with pytest.raises(ConfigError):
            await client.get_job("job-id-that-is-far-too-long")
        with pytest.raises(ConfigError):
            client.job_logs("j", severity="debug")
        with pytest.raises(ConfigError):
            await client.upload_image("b", "dir/a.jpg", b"x")
        with pytest.raises(ConfigError):
            await client.start_job("j", ImageJobSpec(batch_id="UPPER", workflow_id="w"))
        with pytest.raises(ConfigError):
            await client.ingest_image_references("b")
    assert stub.requests == []


async def test_using_the_client_outside_its_context_is_a_clear_error() -> None:
    client = RoboflowClient(client_config("http://127.0.0.1:9", KEY))
    with pytest.raises(RuntimeError, match="async with"):
        await client.workspace()


async def test_missing_ca_bundle_is_a_config_error(tmp_path: Path) -> None:
    config = client_config("https://127.0.0.1:9", KEY, ca_bundle=tmp_path / "nope.pem")
    with pytest.raises(ConfigError, match=r"nope\.pem"):
        async with RoboflowClient(config):
            pass


def test_retry_after_parsing() -> None:
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("7", now=now) == 7.0
    assert parse_retry_after(" 1.5 ", now=now) == 1.5
    assert parse_retry_after("-3", now=now) == 0.0
    later = format_datetime(now + timedelta(seconds=30), usegmt=True)
    assert parse_retry_after(later, now=now) == 30.0
    earlier = format_datetime(now - timedelta(seconds=30), usegmt=True)
    assert parse_retry_after(earlier, now=now) == 0.0
    assert parse_retry_after("soon", now=now) is None
    assert parse_retry_after(None) is None
    assert parse_retry_after("inf") is None
