from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rfbatch.errors import ConfigError
from rfbatch.ids import (
    JOB_ID_RE,
    job_id_for_batch,
    validate_api_key,
    validate_batch_id,
    validate_job_id,
)

batch_ids = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=64)


@pytest.mark.parametrize("bad", ["", "UPPER", "has space", "a/b", "x" * 65, "é"])
def test_bad_batch_ids_are_refused_by_name(bad: str) -> None:
    with pytest.raises(ConfigError, match="invalid batch id"):
        validate_batch_id(bad)


def test_bad_job_id_is_refused() -> None:
    with pytest.raises(ConfigError, match="invalid job id"):
        validate_job_id("x" * 21)


@given(batch_ids)
def test_derived_job_id_is_valid_and_stable(batch_id: str) -> None:
    job_id = job_id_for_batch(batch_id)
    assert JOB_ID_RE.fullmatch(job_id)
    assert job_id == job_id_for_batch(batch_id)


@given(batch_ids, batch_ids)
def test_distinct_batches_get_distinct_job_ids(a: str, b: str) -> None:
    if a != b:
        assert job_id_for_batch(a) != job_id_for_batch(b)


def test_api_key_is_trimmed_and_implausible_keys_are_refused_without_showing_them() -> None:
    assert validate_api_key("  abc123XYZ\n") == "abc123XYZ"
    for bad, what in [
        ("", "no API key"),
        ("   ", "no API key"),
        ("abc def", "a space at position 4"),
        ("abc\x07def", "U+0007"),
        ("clé-secrète", "U+00E9"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(what)) as info:
            validate_api_key(bad)
        if bad.strip():
            assert bad not in str(info.value)
