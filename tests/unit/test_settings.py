from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from rfbatch.errors import ConfigError
from rfbatch.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ROBOFLOW_API_KEY", "API_BASE_URL"):
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
