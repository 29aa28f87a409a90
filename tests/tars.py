"""Small uncompressed tar archives built in memory, as the tests upload them as shards."""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterable, Mapping
from typing import Any


def tar_of(
    members: Mapping[str, bytes] | Iterable[tuple[str, bytes]],
    notification: Mapping[str, Any] | None = None,
) -> bytes:
    """A tar of ``members`` (name -> bytes, in order), then ``notification`` as the
    shard's ``notification_config.json`` when one is given."""
    items = list(members.items() if isinstance(members, Mapping) else members)
    if notification is not None:
        items.append(("notification_config.json", json.dumps(dict(notification)).encode()))
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in items:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()
