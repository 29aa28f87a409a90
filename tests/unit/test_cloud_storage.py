"""Cloud-storage paths for references ingest: which objects are taken, their names and URLs."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from fsspec.implementations.memory import MemoryFileSystem

from rfbatch.errors import ConfigError
from rfbatch.pipeline.cloud_storage import (
    cloud_references,
    glob_matcher,
    split_path,
    store_options,
)


class SigningMemoryFS(MemoryFileSystem):  # type: ignore[misc]  # fsspec has no types
    """fsspec's in-memory store, with the presigning the cloud stores have."""

    protocol = ("s3",)  # what the paths say; the objects live in memory

    @classmethod
    def _strip_protocol(cls, path: str) -> str:
        return "/" + str(path).removeprefix("s3://").lstrip("/")

    def sign(self, path: str, expiration: int = 100, **kwargs: Any) -> str:
        return f"https://signed.invalid{self._strip_protocol(path)}?expires={expiration}"


@pytest.fixture
def bucket() -> tuple[SigningMemoryFS, str]:
    fs = SigningMemoryFS()
    root = f"bucket-{uuid.uuid4().hex[:8]}"
    for rel in (
        "cams/a/day1/img.jpg",
        "cams/b/day1/img.jpg",  # the same base name in another folder
        "cams/b/day1/clip.mp4",
        "cams/b/notes.txt",
        "cams/top.PNG",
        "other/x.jpg",
    ):
        fs.pipe(f"/{root}/{rel}", b"bytes")
    return fs, root


def test_every_image_below_the_path_is_presigned_with_a_unique_name(
    bucket: tuple[SigningMemoryFS, str],
) -> None:
    fs, root = bucket
    refs = cloud_references(f"s3://{root}/cams", ["jpg", "png"], filesystem=fs, expiration=60)
    names = sorted(r.name for r in refs)
    assert len(names) == 3
    assert len(set(names)) == 3  # two img.jpg, never one name twice
    assert "top.PNG" in names
    urls = {r.url for r in refs}
    assert f"https://signed.invalid/{root}/cams/b/day1/img.jpg?expires=60" in urls
    assert all(not u.endswith((".mp4", ".txt")) for u in (r.url.split("?")[0] for r in refs))


def test_a_glob_picks_what_it_matches(bucket: tuple[SigningMemoryFS, str]) -> None:
    fs, root = bucket
    refs = cloud_references(f"s3://{root}/cams/b/**/*.jpg", ["jpg"], filesystem=fs)
    assert [r.url.split("?")[0] for r in refs] == [
        f"https://signed.invalid/{root}/cams/b/day1/img.jpg"
    ]
    videos = cloud_references(f"s3://{root}/cams/*/day1/*", ["mp4"], filesystem=fs)
    assert [r.name for r in videos] == ["clip.mp4"]


def test_nothing_to_take_and_a_missing_bucket_are_one_line_errors(
    bucket: tuple[SigningMemoryFS, str],
) -> None:
    fs, root = bucket
    with pytest.raises(ConfigError, match="no media files under") as none:
        cloud_references(f"s3://{root}/cams/**/*.gif", ["jpg"], filesystem=fs)
    with pytest.raises(ConfigError, match="no such bucket or folder") as missing:
        cloud_references("s3://no-such-bucket/x", ["jpg"], filesystem=fs)
    assert "\n" not in str(none.value) + str(missing.value)


@pytest.mark.parametrize(
    ("pattern", "path", "matches"),
    [
        ("**/*.jpg", "a.jpg", True),
        ("**/*.jpg", "x/y/a.jpg", True),
        ("*.jpg", "x/a.jpg", False),
        ("2024-*/*.png", "2024-01/a.png", True),
        ("2024-*/*.png", "2023-01/a.png", False),
        ("cam?/**", "cam1/d/a.jpg", True),
        ("cam[12]/*.jpg", "cam3/a.jpg", False),
    ],
)
def test_glob_patterns(pattern: str, path: str, matches: bool) -> None:
    assert bool(glob_matcher(pattern).fullmatch(path)) is matches


def test_a_path_splits_at_its_first_glob_and_stores_take_their_settings() -> None:
    assert split_path("s3://b/cams/**/*.jpg") == ("s3://b/cams", "**/*.jpg")
    assert split_path("gs://b/cams/") == ("gs://b/cams", None)
    env = {"AWS_ENDPOINT_URL": "https://r2.example", "AWS_REGION": "auto", "AWS_PROFILE": "p"}
    assert store_options("s3", env) == {
        "endpoint_url": "https://r2.example",
        "client_kwargs": {"region_name": "auto"},
        "profile": "p",
    }
    azure = {
        "AZURE_STORAGE_ACCOUNT": "acct",
        "AZURE_STORAGE_KEY": "k",
        "AZURE_STORAGE_SAS_TOKEN": "t",
    }
    assert store_options("az", azure) == {"account_name": "acct", "sas_token": "t"}
