from __future__ import annotations

import hashlib
import unicodedata

from hypothesis import given
from hypothesis import strategies as st

from rfbatch.member_names import MAX_NAME_BYTES, member_name

segment = st.text(min_size=1, max_size=80).filter(lambda s: "/" not in s)
rels = st.lists(segment, min_size=1, max_size=4).map("/".join)
media_rels = st.tuples(rels, st.sampled_from([".jpg", ".PNG", ".mp4", ".jpeg", ""])).map(
    lambda t: t[0] + t[1]
)


def never(_: str) -> bool:
    return False


def assert_safe(name: str) -> None:
    assert name
    assert name not in (".", "..")
    assert not name.startswith(".")
    assert not set(name) & {"/", "\\", "\x00"}
    assert not any(unicodedata.category(c) in ("Cc", "Cs") for c in name)
    assert len(name.encode("utf-8")) <= MAX_NAME_BYTES


def test_basename_when_free() -> None:
    assert member_name("cam1/2024/img_001.jpg", never) == "img_001.jpg"
    assert member_name("img.JPG", never) == "img.JPG"


def test_collision_gets_hash_of_rel() -> None:
    taken = {"img.jpg"}
    name = member_name("b/img.jpg", taken.__contains__)
    digest = hashlib.sha256(b"b/img.jpg").hexdigest()[:8]
    assert name == f"img--{digest}.jpg"
    # Deterministic: the same question gets the same answer.
    assert member_name("b/img.jpg", taken.__contains__) == name
    # Even the hashed name taken: a counter settles it.
    taken.add(name)
    assert member_name("b/img.jpg", taken.__contains__) == f"img--{digest}-2.jpg"


def test_unsafe_characters_are_replaced() -> None:
    assert member_name("a/b\\c.jpg", never) == "b_c.jpg"
    assert member_name("x/new\nline\x7f.jpg", never) == "new_line_.jpg"
    assert member_name("x/..", never) == "_.."
    assert member_name(".hidden.png", never) == "_.hidden.png"
    assert member_name("x/ .jpg", never) == "_.jpg"
    assert member_name("bad\udcff.jpg", never) == "bad_.jpg"
    assert member_name("notification_config.json", never) != "notification_config.json"


def test_overlong_names_are_cut_keeping_the_extension() -> None:
    rel = "dir/" + "é" * 300 + ".jpeg"
    name = member_name(rel, never)
    assert name.endswith(".jpeg")
    assert len(name.encode()) <= MAX_NAME_BYTES
    assert hashlib.sha256(rel.encode()).hexdigest()[:8] in name
    other = member_name("dir/" + "é" * 299 + "x.jpeg", never)
    assert other != name


@given(media_rels)
def test_any_name_is_safe_and_keeps_a_clean_extension(rel: str) -> None:
    name = member_name(rel, never)
    assert_safe(name)
    for ext in (".jpg", ".PNG", ".mp4", ".jpeg"):
        if rel.endswith(ext):
            assert name.endswith(ext)


@given(st.lists(media_rels, min_size=1, max_size=30, unique=True))
def test_names_are_distinct_within_a_batch(paths: list[str]) -> None:
    taken: set[str] = set()
    for rel in paths:
        name = member_name(rel, taken.__contains__)
        assert_safe(name)
        assert name not in taken
        taken.add(name)


@given(st.lists(st.sampled_from(["a", "b", "c/d", "é"]), min_size=2, max_size=20, unique=True))
def test_same_basename_in_many_folders(folders: list[str]) -> None:
    taken: set[str] = set()
    names = []
    for folder in folders:
        name = member_name(f"{folder}/IMG_0001.JPG", taken.__contains__)
        taken.add(name)
        names.append(name)
    assert names[0] == "IMG_0001.JPG"
    assert len(set(names)) == len(names)
    assert all(n.endswith(".JPG") for n in names)
