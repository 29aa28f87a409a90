from __future__ import annotations

import pytest

from rfbatch import __version__
from rfbatch.api import ClientConfig, RetryPolicy
from rfbatch.errors import ConfigError

KEY = "sk-live-abcdef123456"


def test_from_env_reads_key_and_base_url_and_strips_trailing_slash() -> None:
    config = ClientConfig.from_env(
        {"ROBOFLOW_API_KEY": KEY, "API_BASE_URL": "http://127.0.0.1:9999/"}
    )
    assert config.api_key == KEY
    assert config.base_url == "http://127.0.0.1:9999"
    assert config.user_agent == f"rfbatch/{__version__}"


def test_from_env_defaults_to_roboflow_and_overrides_win() -> None:
    config = ClientConfig.from_env(
        {"ROBOFLOW_API_KEY": KEY}, read_timeout=5.0, max_concurrent_requests=3
    )
    assert config.base_url == "https://api.roboflow.com"
    assert config.read_timeout == 5.0
    assert config.max_concurrent_requests == 3
    overridden = ClientConfig.from_env({"ROBOFLOW_API_KEY": KEY}, api_key="other-key")
    assert overridden.api_key == "other-key"


def test_missing_key_is_one_clear_line() -> None:
    with pytest.raises(ConfigError) as info:
        ClientConfig.from_env({"API_BASE_URL": "http://127.0.0.1:1"})
    message = str(info.value)
    assert "ROBOFLOW_API_KEY" in message
    assert "\n" not in message


@pytest.mark.parametrize("base_url", ["ftp://example.com", "127.0.0.1:80", "http://h/?x=1"])
def test_bad_base_url_is_refused(base_url: str) -> None:
    with pytest.raises(ConfigError, match="API_BASE_URL"):
        ClientConfig(api_key=KEY, base_url=base_url)


def test_unknown_override_is_refused() -> None:
    with pytest.raises(ConfigError, match="colour"):
        ClientConfig.from_env({"ROBOFLOW_API_KEY": KEY}, colour="blue")


def test_repr_masks_the_key() -> None:
    config = ClientConfig(api_key=KEY)
    shown = repr(config)
    assert KEY not in shown
    assert "api_key='***'" in shown
    assert "base_url='https://api.roboflow.com'" in shown
    assert KEY not in str(config)


def test_retry_policy_defaults_and_validation() -> None:
    policy = RetryPolicy()
    assert (policy.attempts, policy.timeout, policy.server_error_attempts) == (6, 120.0, 3)
    with pytest.raises(ConfigError):
        RetryPolicy(attempts=0)
    with pytest.raises(ConfigError):
        RetryPolicy(wait_max=-1)


def test_limits_are_validated() -> None:
    with pytest.raises(ConfigError):
        ClientConfig(api_key=KEY, max_concurrent_requests=0)
    with pytest.raises(ConfigError):
        ClientConfig(api_key=KEY, read_timeout=0)
    with pytest.raises(ConfigError):
        ClientConfig(api_key="  ")


def test_from_env_follows_the_region_when_no_address_is_given() -> None:
    eu = ClientConfig.from_env({"ROBOFLOW_API_KEY": KEY, "ROBOFLOW_REGION": "eu"})
    assert eu.base_url == "https://api.roboflow.eu"
    staging = ClientConfig.from_env({"ROBOFLOW_API_KEY": KEY, "ROBOFLOW_ENVIRONMENT": "staging"})
    assert staging.base_url == "https://api.roboflow.one"
    explicit = {"ROBOFLOW_API_KEY": KEY, "ROBOFLOW_REGION": "eu", "API_BASE_URL": "http://h:1"}
    assert ClientConfig.from_env(explicit).base_url == "http://h:1"
    with pytest.raises(ConfigError, match="ROBOFLOW_REGION 'mars'"):
        ClientConfig.from_env({"ROBOFLOW_API_KEY": KEY, "ROBOFLOW_REGION": "mars"})
