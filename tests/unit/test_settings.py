from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from rfbatch.errors import ConfigError
from rfbatch.settings import Settings, base_url_origin, load_settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "ROBOFLOW_API_KEY",
        "API_BASE_URL",
        "RFBATCH_API__BASE_URL",
        "ROBOFLOW_REGION",
        "ROBOFLOW_ENVIRONMENT",
        "ROBOFLOW_API_REQUEST_TIMEOUT",
    ):
        monkeypatch.delenv(name, raising=False)


def test_precedence_file_env_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[upload]\nshard_workers = 3\nvideo_workers = 3\n[api]\nread_timeout = 5\n")
    monkeypatch.setenv("RFBATCH_UPLOAD__VIDEO_WORKERS", "5")
    s = load_settings(cfg, {"api": {"read_timeout": 7.0}})
    assert (s.upload.shard_workers, s.upload.video_workers, s.api.read_timeout) == (3, 5, 7.0)


def test_inference_cli_names_are_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROBOFLOW_API_KEY", "k-123")
    monkeypatch.setenv("API_BASE_URL", "http://127.0.0.1:8000/")
    s = load_settings()
    assert s.api_key() == "k-123"
    assert s.api.base_url == "http://127.0.0.1:8000"
    assert "k-123" not in repr(s)


def test_missing_key_is_a_clear_config_error() -> None:
    with pytest.raises(ConfigError, match="ROBOFLOW_API_KEY"):
        load_settings().api_key()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("[upload]\nshard_max_files = 501\n", "upload.shard_max_files"),
        ("[upload]\nshard_workerz = 1\n", "unknown key 'upload.shard_workerz'"),
        ("[api]\nbase_url = 'ftp://x'\n", "api.base_url"),
        ("[api\n", "not valid TOML"),
    ],
)
def test_bad_file_names_the_key(tmp_path: Path, body: str, message: str) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(body)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")) as info:
        load_settings(cfg)
    assert "\n" not in str(info.value)


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml")


def test_example_config_lists_every_key_with_its_default() -> None:
    example = tomllib.loads((ROOT / "config.example.toml").read_text())
    defaults = Settings().model_dump(mode="json")
    for section, fields in Settings.model_fields.items():
        model = fields.annotation
        assert model is not None
        documented = set(example.get(section, {}))
        text = (ROOT / "config.example.toml").read_text()
        for key in model.model_fields:
            # Optional keys are documented commented-out; the rest with their default value.
            assert key in documented or f"# {key} =" in text, f"{section}.{key} undocumented"
            if key in documented:
                assert example[section][key] == defaults[section][key], f"{section}.{key}"
    load_settings(ROOT / "config.example.toml")


@pytest.mark.parametrize(
    ("region", "environment", "url"),
    [
        ("eu", None, "https://api.roboflow.eu"),
        ("EU", "staging", "https://api.roboflow-eu.one"),
        (None, "staging", "https://api.roboflow.one"),
        ("us", "prod", "https://api.roboflow.com"),
    ],
)
def test_region_and_environment_choose_the_api_as_the_official_client_does(
    monkeypatch: pytest.MonkeyPatch, region: str | None, environment: str | None, url: str
) -> None:
    if region:
        monkeypatch.setenv("ROBOFLOW_REGION", region)
    if environment:
        monkeypatch.setenv("ROBOFLOW_ENVIRONMENT", environment)
    assert load_settings().api.base_url == url
    assert base_url_origin(None).startswith("ROBOFLOW_")


def test_an_explicit_url_beats_the_region_in_the_order_of_the_sources(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[api]\nbase_url = "https://from-file.example"\n')
    assert (load_settings().api.base_url, base_url_origin(None)) == (
        "https://api.roboflow.com",
        "the default",
    )
    monkeypatch.setenv("ROBOFLOW_REGION", "eu")
    steps: list[tuple[Path | None, str, str]] = [
        (None, "https://api.roboflow.eu", "ROBOFLOW_REGION=eu"),
        (cfg, "https://from-file.example", f"{cfg} [api] base_url"),
    ]
    for config, url, origin in steps:
        assert (load_settings(config).api.base_url, base_url_origin(config)) == (url, origin)
    monkeypatch.setenv("API_BASE_URL", "https://from-api-base-url.example")
    assert load_settings(cfg).api.base_url == "https://from-api-base-url.example"
    assert base_url_origin(cfg) == "API_BASE_URL"
    monkeypatch.setenv("RFBATCH_API__BASE_URL", "https://ours.example")
    assert load_settings(cfg).api.base_url == "https://ours.example"
    assert base_url_origin(cfg) == "RFBATCH_API__BASE_URL"


def test_an_unknown_region_stops_the_start_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROBOFLOW_REGION", "mars")
    with pytest.raises(ConfigError, match="ROBOFLOW_REGION 'mars' is not a region: use us or eu"):
        load_settings()


def test_the_official_clients_request_timeout_is_the_read_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ROBOFLOW_API_REQUEST_TIMEOUT", "120")
    assert load_settings().api.read_timeout == 120.0
    monkeypatch.setenv("RFBATCH_API__READ_TIMEOUT", "30")
    assert load_settings().api.read_timeout == 30.0
