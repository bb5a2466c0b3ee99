"""shared.config.redact_url: credentials in a URL never reach a message or a log line."""

from __future__ import annotations

import pytest

from shared.config import ConfigError, ServiceConfig, redact_url


@pytest.mark.parametrize(("url", "shown"), [
    ("redis://:s3cret@redis:6379/0", "redis://***@redis:6379/0"),
    ("redis://default:s3cret@redis:6379/0", "redis://***@redis:6379/0"),
    ("rediss://:p%40ss@cache.example.com:6380/1", "rediss://***@cache.example.com:6380/1"),
    ("redis://:a@b:c@redis:6379/0", "redis://***@redis:6379/0"),  # an unencoded @ in the password
    ("http//:s3cret@redis", "http//***@redis"),  # malformed: still hidden
    ("redis://redis:6379/0", "redis://redis:6379/0"),
])
def test_redact_url(url: str, shown: str):
    assert redact_url(url) == shown


def test_config_error_does_not_echo_a_password():
    with pytest.raises(ConfigError) as caught:
        ServiceConfig.from_env({"HOTLAP_STORE_URL": "file:///tmp/x", "HOTLAP_REDIS_URL": "tcp://:s3cret@redis:6379"})
    assert "s3cret" not in str(caught.value)
    assert "HOTLAP_REDIS_URL" in str(caught.value) and "tcp://***@redis:6379" in str(caught.value)
