"""Fault injection: seeded rates per route, each fault kind, runtime changes, the TOML format."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from rfbatch.emulator import EmulatorConfig, FaultProfile, FaultRates, running_emulator
from rfbatch.emulator.faults import FaultInjector
from tests.emulator.support import Api
from tests.tars import tar_of


async def _api_with(profile: FaultProfile) -> AsyncIterator[Api]:
    config = EmulatorConfig(api_key="k", workspace="test-ws", faults=profile)
    async with running_emulator(config) as emu, aiohttp.ClientSession() as session:
        yield Api(emu, session)


def _expected(profile: FaultProfile, route: str, n: int) -> Counter[str]:
    injector = FaultInjector(profile)
    return Counter(f.kind for f in (injector.draw(route) for _ in range(n)) if f is not None)


async def test_status_faults_follow_the_seeded_rates() -> None:
    profile = FaultProfile(
        routes={"count": FaultRates(status_429=0.2, status_503=0.1, status_500=0.05)},
        seed=1234,
        retry_after=2,
    )
    async for api in _api_with(profile):
        await api.upload_image("b", "a.jpg", b"a")
        statuses: Counter[int] = Counter()
        for _ in range(300):
            reply = await api.get(api.ds("/batches/b/count"))
            statuses[reply.status] += 1
            if reply.status in (429, 503):
                assert reply.headers["Retry-After"] == "2"
            if reply.status != 200:
                assert "injected" in reply.body["error"]
        expected = _expected(profile, "count", 300)
        assert statuses[429] == expected["status_429"]
        assert statuses[503] == expected["status_503"]
        assert statuses[500] == expected["status_500"]
        # and the seeded draw really is near the configured rates
        assert 40 <= statuses[429] <= 80
        assert 15 <= statuses[503] <= 45
        assert api.emu.state()["counters"]["faultsInjected"] == sum(expected.values())
        # another route was never faulted
        assert (await api.get(api.ds("/batches/b"))).status == 200


async def test_same_seed_same_faults() -> None:
    profile = FaultProfile(routes={"*": FaultRates(status_502=0.3)}, seed=7)
    runs: list[list[int]] = []
    for _ in range(2):
        async for api in _api_with(profile):
            runs.append([(await api.get(api.ds("/batches"))).status for _ in range(40)])
    assert runs[0] == runs[1]
    assert 502 in runs[0]
    assert 200 in runs[0]


async def test_put_reset_keeps_nothing_and_the_retry_succeeds() -> None:
    profile = FaultProfile(routes={"put": FaultRates(reset=1.0)}, seed=1)
    async for api in _api_with(profile):
        details = await api.shard_url("r")
        body = tar_of({f"{n}.jpg": bytes(300_000) for n in range(4)})
        with pytest.raises(aiohttp.ClientError):
            await api.put(details, body)
        api.emu.set_faults(None)
        assert await api.put(details, body) == 200
        await api.wait_count("r", 4)
        counters = api.emu.state()["counters"]
        assert counters["puts"] == 1
        # aiohttp may resend an idempotent PUT once by itself; every attempt was reset.
        assert counters["putsRejected"] == counters["faultsInjected"] >= 1
        assert all(i["received"] == 1 for i in api.emu.state()["batches"]["r"]["items"])


async def test_download_truncated_and_reset_and_expired() -> None:
    async for api in _api_with(FaultProfile()):
        payload = bytes(range(256)) * 2000
        await api.upload_image("d", "a.jpg", payload)
        [entry] = await api.list_all("d")
        for kind in ("truncate", "reset"):
            api.emu.set_faults(FaultProfile(routes={"download": FaultRates(**{kind: 1.0})}))
            got = bytearray()
            async with api.session.get(entry["downloadURL"]) as resp:
                assert resp.status == 200
                assert resp.content_length == len(payload)
                with pytest.raises(aiohttp.ClientPayloadError):
                    await _read_into(resp, got)
            assert len(got) < len(payload)
            assert bytes(got) == payload[: len(got)]
        api.emu.set_faults(FaultProfile(routes={"download": FaultRates(expire=1.0)}))
        async with api.session.get(entry["downloadURL"]) as resp:
            assert resp.status == 403
            assert "ExpiredToken" in await resp.text()
        api.emu.set_faults(None)
        assert await api.download(entry["downloadURL"]) == payload
        assert api.emu.state()["counters"]["faultsInjected"] == 3


async def _read_into(resp: aiohttp.ClientResponse, out: bytearray) -> None:
    async for chunk in resp.content.iter_any():
        out += chunk


async def test_json_route_reset_truncate_and_slow() -> None:
    async for api in _api_with(FaultProfile(routes={"workspace": FaultRates(reset=1.0)})):
        with pytest.raises(aiohttp.ClientError):
            await api.get(f"{api.emu.base_url}/")
        # aiohttp may resend an idempotent request once by itself after a reset.
        resets = api.emu.state()["counters"]["faultsInjected"]
        assert resets in (1, 2)
        api.emu.set_faults(FaultProfile(routes={"workspace": FaultRates(truncate=1.0)}))
        with pytest.raises(aiohttp.ClientPayloadError):
            await api.get(f"{api.emu.base_url}/")
        api.emu.set_faults(
            FaultProfile(routes={"workspace": FaultRates(slow=1.0)}, slow_seconds=0.01)
        )
        reply = await api.get(f"{api.emu.base_url}/")
        assert reply.status == 200
        assert reply.body["workspace"] == "test-ws"
        assert api.emu.state()["counters"]["faultsInjected"] == resets + 2


async def test_put_expire_fault_is_403() -> None:
    async for api in _api_with(FaultProfile(routes={"put": FaultRates(expire=1.0)})):
        details = await api.shard_url("e")
        assert await api.put(details, tar_of({"a.jpg": b"a"})) == 403
        assert api.emu.state()["counters"]["putsRejected"] == 1


async def test_star_rates_merge_with_route_rates() -> None:
    profile = FaultProfile(
        routes={"*": FaultRates(status_429=0.1), "put": FaultRates(reset=0.2, status_429=0.0)}
    )
    assert profile.rates_for("count").get("status_429") == 0.1
    assert profile.rates_for("put").get("status_429") == 0.0
    assert profile.rates_for("put").get("reset") == 0.2
    assert profile.rates_for("count").get("expire") == 0.0  # expiry only means something on URLs


def test_profile_from_toml(tmp_path: Path) -> None:
    path = tmp_path / "faults.toml"
    path.write_text(
        """
seed = 42
retry_after = 3
slow_seconds = 0.25
cut_fraction = 0.3

[routes."*"]
status_429 = 0.05

[routes.put]
reset = 0.1
status_503 = 0.05

[routes.download]
truncate = 0.1
expire = 0.02
"""
    )
    profile = FaultProfile.from_toml(path)
    assert profile.seed == 42
    assert profile.retry_after == 3
    assert profile.slow_seconds == 0.25
    assert profile.cut_fraction == 0.3
    assert profile.rates_for("put") == FaultRates(
        status_408=0.0,
        status_429=0.05,
        status_500=0.0,
        status_502=0.0,
        status_503=0.05,
        status_504=0.0,
        reset=0.1,
        slow=0.0,
        truncate=0.0,
        expire=0.0,
    )
    assert profile.rates_for("download").get("expire") == 0.02


@pytest.mark.parametrize(
    "data",
    [
        {"routes": {"nosuchroute": {"status_429": 0.1}}},
        {"routes": {"put": {"status_418": 0.1}}},
        {"routes": {"put": {"reset": 1.5}}},
        {"routes": {"put": {"reset": 0.6, "status_503": 0.6}}},
        {"cut_fraction": 1.0},
        {"colour": "blue"},
    ],
)
def test_invalid_profiles_are_refused(data: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=r"."):
        FaultProfile.from_dict(data)
