"""Properties of the pure parts, over inputs nobody would think to write down.

Already covered elsewhere and not repeated here: the streamed tar against ``tarfile``
(tests/localfs/test_localfs_archive.py), member names being safe and distinct
(tests/localfs/test_localfs_names.py), derived job ids being valid, stable and distinct
(tests/unit/test_ids.py), a key inside a URL being masked (tests/unit/test_redact.py).
"""

from __future__ import annotations

import os
import string
import tempfile
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar
from urllib.parse import parse_qsl, quote, quote_plus, urlencode, urlsplit

import anyio
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from rfbatch.api.pagination import MAX_EMPTY_PAGES, Page, Paginator
from rfbatch.emulator.model import is_image_name
from rfbatch.emulator.sinks import member_problem
from rfbatch.errors import ConfigError, DecodeError, UnsafePathError
from rfbatch.ids import BATCH_ID_RE, job_id_for_batch, validate_batch_id, validate_job_id
from rfbatch.localfs.archive import TarMember, tarinfo_for
from rfbatch.localfs.atomic import safe_join
from rfbatch.media import FoundFile
from rfbatch.member_names import member_name
from rfbatch.pipeline.batches import batch_id_for
from rfbatch.pipeline.sync import default_batch_id
from rfbatch.redact import MASK, MIN_FREE_TEXT_SECRET, redact_text, redact_url
from rfbatch.state import files as manifest_files
from rfbatch.state.manifest import SqliteManifest
from rfbatch.state.records import FileRow

T = TypeVar("T")

# --- safe_join -------------------------------------------------------------------------------

# Pieces that matter to a path check, mixed with arbitrary text.
_TRICKY = st.sampled_from(
    ["..", ".", "", "a", "é", "C:", "c:", "\\", "..\\..", "\x00", "\n", "\x7f", "\ud800", " "]
)
segments = st.one_of(_TRICKY, st.text(max_size=12))
hostile_names = st.one_of(
    st.lists(segments, min_size=1, max_size=6).map("/".join),
    st.lists(segments, min_size=1, max_size=4).map(lambda p: "/" + "/".join(p)),
    st.text(max_size=40),
)


@pytest.fixture(scope="module")
def root() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "out"
        folder.mkdir()
        yield folder


@settings(max_examples=500, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=hostile_names)
@example(name="a/../../b")
@example(name="./")
@example(name="x" * 256)
def test_safe_join_stays_inside_or_refuses(root: Path, name: str) -> None:
    try:
        joined = safe_join(root, name)
    except UnsafePathError as exc:
        refusal = str(exc)
    else:
        refusal = ""
    if refusal:
        assert refusal.startswith("refusing file name")
        return
    real = os.path.realpath(joined)
    assert real.startswith(os.path.realpath(root) + os.sep)
    assert joined != root
    parts = [p for p in name.split("/") if p not in ("", ".")]
    assert joined == root.joinpath(*parts)
    # Whatever is accepted can be created: encodable, no NUL, no component too long.
    encoded = os.fsencode(joined)
    assert b"\x00" not in encoded
    assert all(len(p) <= 255 for p in encoded.split(b"/"))


# --- member names the service accepts ---------------------------------------------------------

image_rels = st.tuples(
    st.lists(
        st.text(min_size=1, max_size=30).filter(lambda s: "/" not in s), min_size=1, max_size=3
    ),
    st.sampled_from([".jpg", ".JPEG", ".png", ".webp", ".bmp"]),
).map(lambda t: "/".join(t[0]) + t[1])


@given(rels=st.lists(image_rels, min_size=1, max_size=20, unique=True))
def test_member_names_are_ones_the_service_stores_as_images(rels: list[str]) -> None:
    taken: set[str] = set()
    for rel in rels:
        name = member_name(rel, taken.__contains__)
        taken.add(name)
        info = tarinfo_for(TarMember.from_bytes(name, b"x", 0))
        # What the emulator (after the contract) checks on a member: flat, regular, an image.
        assert member_problem(info) is None, name
        assert is_image_name(name), name


# --- pagination ------------------------------------------------------------------------------


def run(fn: Callable[[], Awaitable[T]]) -> T:
    return anyio.run(fn, backend="asyncio", backend_options={"use_uvloop": True})


async def walk(paginator: Paginator[int]) -> list[int]:
    return [item async for item in paginator]


class Chain:
    """Pages keyed by the token that fetches them; ``asked`` records every fetch."""

    def __init__(self, pages: Sequence[tuple[list[int], str | None]]) -> None:
        self.by_token: dict[str | None, Page[int]] = {}
        token: str | None = None
        for items, following in pages:
            self.by_token.setdefault(token, Page(items, following))
            token = following
        self.asked: list[str | None] = []

    async def fetch(self, token: str | None) -> Page[int]:
        self.asked.append(token)
        if len(self.asked) > 10_000:
            raise AssertionError("the walk does not end")
        return self.by_token[token]


page_items = st.lists(st.integers(0, 1000), max_size=5)


@settings(max_examples=200)
@given(
    pages=st.lists(page_items, min_size=1, max_size=30),
    tokens=st.lists(st.text(min_size=1, max_size=8), min_size=30, max_size=30, unique=True),
    last=st.sampled_from([None, ""]),
)
def test_a_finite_listing_yields_every_item_once_in_order(
    pages: list[list[int]], tokens: list[str], last: str | None
) -> None:
    # A run of MAX_EMPTY_PAGES empty pages is refused on purpose; keep below it here.
    chained = [(items, tokens[i] if i < len(pages) - 1 else last) for i, items in enumerate(pages)]
    chain = Chain(chained)

    got = run(lambda: walk(Paginator("list_things", chain.fetch)))

    assert got == [i for items in pages for i in items]
    assert chain.asked == [None, *tokens[: len(pages) - 1]]


@settings(max_examples=200)
@given(
    length=st.integers(1, 40),
    back_to=st.data(),
    items=page_items,
)
def test_a_token_cycle_ends_the_walk_with_a_clear_error(
    length: int, back_to: st.DataObject, items: list[int]
) -> None:
    target = back_to.draw(st.integers(1, length), label="cycle returns to page")
    tokens = [f"t{i}" for i in range(1, length + 1)]
    pages = [([*items, i], tokens[i]) for i in range(length)]
    pages.append(([0], tokens[target - 1]))  # the last page points back into the chain

    chain = Chain(pages)
    with pytest.raises(DecodeError, match="already sent"):
        run(lambda: walk(Paginator("list_things", chain.fetch)))
    # Every page was fetched once, and the walk stopped at the first repeated token.
    assert len(chain.asked) == length + 1
    assert len(set(chain.asked)) == len(chain.asked)


@given(empties=st.integers(0, 2 * MAX_EMPTY_PAGES), data=st.integers(0, 3))
def test_runs_of_empty_pages_end_only_when_they_never_end(empties: int, data: int) -> None:
    # ``data`` pages with one item each, then ``empties`` empty pages, then the end.
    pages: list[tuple[list[int], str | None]] = [([i], f"d{i}") for i in range(data)]
    pages += [([], f"e{i}") for i in range(empties)]
    pages.append(([], None))
    chain = Chain(pages)
    # Only empty pages that hand out another token count: the last one ends the listing.
    if empties < MAX_EMPTY_PAGES:
        assert run(lambda: walk(Paginator("list_things", chain.fetch))) == list(range(data))
    else:
        with pytest.raises(DecodeError, match="empty pages in a row"):
            run(lambda: walk(Paginator("list_things", chain.fetch)))
        assert len(chain.asked) == data + MAX_EMPTY_PAGES


# --- the manifest keeps any path it is given -------------------------------------------------

path_names = st.text(
    alphabet=st.one_of(
        st.characters(blacklist_characters="/\x00"),  # lone surrogates included
        st.sampled_from(["\udcff", "\udc80", "é", " ", "\n"]),
    ),
    min_size=1,
    max_size=12,
)


@settings(
    max_examples=60,
    deadline=None,
    # The one patch is the same for every example.
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(names=st.lists(path_names, min_size=1, max_size=25, unique=True))
def test_the_manifest_keeps_every_path_however_it_is_spelled(
    names: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Tiny pages, so the walk crosses page boundaries between text and blob keys.
    monkeypatch.setattr(manifest_files, "_PAGE", 3)
    root = Path("/src")
    found = [
        FoundFile(str(root / n), root, n, size=i + 1, mtime_ns=i, inode=i + 10, kind="image")
        for i, n in enumerate(names)
    ]

    async def roundtrip() -> tuple[list[Path], list[Path], list[FileRow | None]]:
        with tempfile.TemporaryDirectory() as tmp:
            async with await SqliteManifest.open(Path(tmp)) as manifest:
                fresh = await manifest.filter_new(found)
                await manifest.mark([f.path for f in found[::2]], "failed", error="x\udcffy")
                walked = [row.path async for row in manifest.files_in_state(["seen", "failed"])]
                rows = [await manifest.get_file(f.path) for f in found]
                again = await manifest.filter_new(found)
                assert [f.path for f in again] == [f.path for f in found]  # none done yet
                return [f.path for f in fresh], walked, rows

    fresh, walked, rows = run(roundtrip)

    assert fresh == [f.path for f in found]
    assert sorted(walked) == sorted(f.path for f in found)
    assert len(walked) == len(set(walked))
    for f, row in zip(found, rows, strict=True):
        assert row is not None
        assert (row.path, row.rel, row.size, row.inode) == (f.path, f.rel, f.size, f.inode)


# --- ids -------------------------------------------------------------------------------------

id_chars = string.ascii_lowercase + string.digits + "-_"


@given(st.text(max_size=80))
@example("a" * 64)
@example("a" * 65)
@example("A")
def test_batch_ids_are_accepted_exactly_when_the_contract_allows(candidate: str) -> None:
    allowed = BATCH_ID_RE.fullmatch(candidate) is not None
    assert allowed == (0 < len(candidate) <= 64 and set(candidate) <= set(id_chars))
    if allowed:
        assert validate_batch_id(candidate) == candidate
        validate_job_id(job_id_for_batch(candidate))
    else:
        with pytest.raises(ConfigError):
            validate_batch_id(candidate)


prefixes = st.text(alphabet=id_chars, min_size=1, max_size=40)
windows = st.integers(0, 253_402_300_799)  # up to 9999-12-31T23:59:59Z


@given(
    prefix=prefixes,
    kind=st.sampled_from(["images", "videos"]),
    start=windows,
    seq=st.integers(0, 999),
)
def test_daemon_batch_ids_are_valid_and_give_valid_job_ids(
    prefix: str, kind: str, start: int, seq: int
) -> None:
    batch = batch_id_for(prefix, kind, float(start), seq)  # type: ignore[arg-type]
    assert validate_batch_id(batch) == batch
    validate_job_id(job_id_for_batch(batch))


@given(
    prefix=prefixes,
    a=st.tuples(st.sampled_from(["images", "videos"]), windows, st.integers(0, 999)),
    b=st.tuples(st.sampled_from(["images", "videos"]), windows, st.integers(0, 999)),
)
def test_daemon_batch_ids_are_distinct_and_sort_by_time(
    prefix: str, a: tuple[str, int, int], b: tuple[str, int, int]
) -> None:
    id_a = batch_id_for(prefix, a[0], float(a[1]), a[2])  # type: ignore[arg-type]
    id_b = batch_id_for(prefix, b[0], float(b[1]), b[2])  # type: ignore[arg-type]
    assert (id_a == id_b) == (a == b)
    if a[0] == b[0] and a[1] != b[1]:
        assert (id_a < id_b) == (a[1] < b[1])
    if id_a != id_b:
        assert job_id_for_batch(id_a) != job_id_for_batch(id_b)


@given(prefix=st.just("p" * 40), start=windows, seq=st.integers(1000, 10**6))
def test_daemon_batch_ids_stay_valid_past_a_thousand_batches_a_window(
    prefix: str, start: int, seq: int
) -> None:
    validate_batch_id(batch_id_for(prefix, "images", float(start), seq))


folder_names = st.text(min_size=1, max_size=60).filter(lambda s: "/" not in s and "\x00" not in s)


@given(names=st.lists(folder_names, min_size=1, max_size=3))
def test_sync_batch_ids_from_any_folder_names_are_valid_and_stable(names: list[str]) -> None:
    assume(all(name not in (".", "..") for name in names))
    assume(all(_encodable(name) for name in names))
    sources = [Path("/data") / name for name in names]
    batch = default_batch_id(sources)
    assert validate_batch_id(batch) == batch
    assert default_batch_id(list(sources)) == batch


def test_sync_batch_id_from_a_folder_name_that_is_not_utf8() -> None:
    batch = default_batch_id([Path(os.fsdecode(b"/data/cam-\xff"))])
    assert validate_batch_id(batch) == batch


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# --- redaction -------------------------------------------------------------------------------

SAFE_KEYS = ["pageSize", "partName", "fileName", "displayName", "name", "severity", "nextPageToken"]
query_keys = st.one_of(
    st.sampled_from([*SAFE_KEYS, "api_key", "X-Goog-Signature", "token", "Expires", "sig"]),
    st.text(alphabet=string.ascii_letters + "_-", min_size=1, max_size=10),
)
query_values = st.text(
    alphabet=string.ascii_letters + string.digits + "-_.~", min_size=1, max_size=20
)


@settings(max_examples=300)
@given(
    host=st.sampled_from(["api.roboflow.com", "127.0.0.1:8080", "user:pw@storage.example"]),
    path=st.text(alphabet=string.ascii_letters + "/-_", max_size=20),
    query=st.lists(st.tuples(query_keys, query_values), min_size=1, max_size=6),
)
def test_redact_url_keeps_only_values_known_to_be_harmless(
    host: str, path: str, query: list[tuple[str, str]]
) -> None:
    url = f"https://{host}/{path.lstrip('/')}?{urlencode(query)}"
    shown = redact_url(url)
    parts = urlsplit(shown)
    assert "@" not in parts.netloc
    assert "pw" not in parts.netloc
    assert parts.path == urlsplit(url).path
    expected = [(key, value if key in SAFE_KEYS else MASK) for key, value in query]
    assert parse_qsl(parts.query, keep_blank_values=True) == expected


secrets = st.text(
    alphabet=st.characters(blacklist_characters="*", blacklist_categories=["Cs"]),
    # Shorter known secrets are masked only where they stand as a key (test_redact.py).
    min_size=MIN_FREE_TEXT_SECRET,
    max_size=30,
)
noise = st.text(max_size=30).filter(lambda s: "*" not in s)


@settings(max_examples=300)
@given(
    secret=secrets, before=noise, after=noise, how=st.sampled_from(["raw", "quote", "plus", "url"])
)
@example(secret="rf-Secret+key/with=odd&chars", before="GET ", after=" failed", how="quote")
def test_redact_text_removes_a_secret_however_it_is_spelled(
    secret: str, before: str, after: str, how: str
) -> None:
    spelled = {
        "raw": secret,
        "quote": quote(secret, safe=""),
        "plus": quote_plus(secret),
        "url": f"https://api.example/ws/batches?api_key={quote(secret, safe='')}&pageSize=5",
    }[how]
    shown = redact_text(before + spelled + after, secret)
    for form in {secret, quote(secret, safe=""), quote(secret, safe="/"), quote_plus(secret)}:
        assert form not in shown
