from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from rfbatch.redact import MASK, redact_text, redact_url


def test_api_key_and_signature_are_masked_but_paging_stays() -> None:
    url = "http://127.0.0.1:9/data-staging/v1/external/ws/batches?api_key=SECRET&pageSize=5"
    assert redact_url(url) == (
        f"http://127.0.0.1:9/data-staging/v1/external/ws/batches?api_key={MASK}&pageSize=5"
    )
    signed = "https://storage.example/b/o?X-Goog-Signature=abc123&X-Goog-Expires=60"
    assert "abc123" not in redact_url(signed)


def test_userinfo_is_dropped() -> None:
    assert "pw" not in redact_url("https://user:pw@host/path?x=1")
    # A database URL has no query, and its password must go all the same.
    assert redact_url("postgresql://rf:s3cret@db:5432/ledger") == "postgresql://db:5432/ledger"


def test_text_with_urls_pairs_and_known_secret() -> None:
    text = "GET http://h/p?api_key=K1 failed; retry with signature=S2, key K3xxxxxxxx leaked"
    out = redact_text(text, "K3xxxxxxxx")
    for secret in ("K1", "S2", "K3xxxxxxxx"):
        assert secret not in out


def test_a_short_key_is_masked_as_a_key_but_does_not_garble_words() -> None:
    text = "workflow my-workflow in workspace k-space: GET http://h/p?api_key=k&pageSize=2 (k)"
    out = redact_text(text, "k")
    assert "my-workflow" in out
    assert "workspace k-space" in out
    assert "api_key=k" not in out
    assert f"api_key={MASK}&pageSize=2" in out


@given(st.text(alphabet=st.characters(min_codepoint=48, max_codepoint=122), min_size=8))
def test_any_key_in_a_url_never_survives(key: str) -> None:
    url = f"https://api.example/ws?api_key={key}&pageSize=10"
    assert f"api_key={key}" not in redact_text(f"error at {url}", key)
    assert key not in redact_text(f"error at {url}", key)


def test_a_url_in_parentheses_keeps_its_closing_parenthesis() -> None:
    out = redact_text("failed (http://h/x?signature=abc) twice")
    assert out == f"failed (http://h/x?signature={MASK}) twice"
