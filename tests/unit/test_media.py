from __future__ import annotations

from pathlib import Path

import pytest

from rfbatch.media import (
    IMAGE_EXTENSIONS,
    VIDEO_EXTENSIONS,
    extension_of,
    kind_of,
    normalize_extensions,
)


def test_contract_extension_sets() -> None:
    assert {"bmp", "dib", "jpeg", "jpg", "jpe", "jp2", "png", "webp"} == IMAGE_EXTENSIONS
    assert {
        "mp4",
        "mov",
        "avi",
        "mkv",
        "webm",
        "m4v",
        "flv",
        "wmv",
        "mpeg",
        "mpg",
        "3gp",
        "ogg",
    } == VIDEO_EXTENSIONS


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("a.jpg", "image"),
        ("A.JPG", "image"),
        ("dir.d/x.JpEg", "image"),
        ("scan.jp2", "image"),
        ("x.WebP", "image"),
        ("clip.MOV", "video"),
        ("clip.m4v", "video"),
        ("notes.txt", None),
        ("jpg", None),
        (".jpg", None),
        ("archive.tar.gz", None),
        ("a.jpg.part", None),
        ("trailingdot.", None),
    ],
)
def test_kind_of(name: str, kind: str | None) -> None:
    assert kind_of(name) == kind
    assert kind_of(Path("/some/where") / name) == kind


def test_custom_sets_and_normalization() -> None:
    images = normalize_extensions([".TIF", "tiff", "."])
    assert images == {"tif", "tiff"}
    assert kind_of("a.TIF", image_extensions=images) == "image"
    assert kind_of("a.jpg", image_extensions=images) is None
    assert extension_of("x/y.Z.PNG") == "png"
