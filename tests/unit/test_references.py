"""Reference files, chunks and ingest ids, without a server."""

from __future__ import annotations

from pathlib import Path

import pytest

from rfbatch.api.idempotency import stable_ingest_id, with_ingest_id
from rfbatch.api.schemas import ImageReference
from rfbatch.errors import ConfigError
from rfbatch.pipeline.references import chunks, parse_source


def _refs(count: int) -> list[ImageReference]:
    return [ImageReference(name=f"i{n}.png", url=f"https://h/i{n}.png") for n in range(count)]


def test_images_go_in_chunks_of_20000_and_videos_in_one_request() -> None:
    sizes = [len(part) for _, part in chunks(_refs(45_000), "image")]
    assert sizes == [20_000, 20_000, 5_000]
    assert [len(part) for _, part in chunks(_refs(45_000), "video")] == [45_000]


def test_the_ingest_id_is_stable_for_the_same_input_only() -> None:
    body = {"imageReferences": [{"name": "a.png", "url": "https://h/a"}]}
    same = stable_ingest_id("b", "ingest_images", body)
    assert same == stable_ingest_id("b", "ingest_images", dict(body))
    # Where the service reports to is not part of what is ingested.
    assert same == stable_ingest_id("b", "ingest_images", {**body, "notificationsURL": "x"})
    assert same != stable_ingest_id("c", "ingest_images", body)
    assert same != stable_ingest_id("b", "ingest_videos", body)
    other = {"imageReferences": [{"name": "a.png", "url": "https://h/b"}]}
    assert same != stable_ingest_id("b", "ingest_images", other)
    # The operator's own id is kept as given.
    assert with_ingest_id({**body, "ingestId": "mine"}, "b", "ingest_images")["ingestId"] == "mine"
    assert with_ingest_id(body, "b", "ingest_images")["ingestId"] == same


def test_a_repeated_name_and_an_empty_file_are_refused(tmp_path: Path) -> None:
    twice = tmp_path / "twice.jsonl"
    twice.write_text(
        '{"name": "a.png", "url": "https://h/1"}\n{"name": "a.png", "url": "https://h/2"}\n'
    )
    with pytest.raises(ConfigError, match=f"{twice}:2: name 'a.png' appears twice"):
        parse_source(str(twice))
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(ConfigError, match="holds no references"):
        parse_source(str(empty))


@pytest.mark.parametrize("path", ["s3://b/x/", "gs://b/x/", "az://c/y", "gcs://b/z"])
def test_a_cloud_path_without_its_store_package_names_the_extra_to_install(path: str) -> None:
    # The dev install has fsspec but none of the stores' packages (s3fs, gcsfs, adlfs).
    with pytest.raises(ConfigError, match=r"pip install 'rfbatch\[cloud\]'"):
        parse_source(path, ["jpg"])
