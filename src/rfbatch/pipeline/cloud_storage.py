"""References from a cloud-storage path: list the objects, keep the media, presign each one.

``rfbatch ingest references s3://bucket/cams/**/*.jpg`` does what the official client does with
such a path: every object below the base path (the part before the first segment holding a
glob character) whose extension rfbatch sends for the kind, and that the glob matches, is
presigned (24 hours by default) and sent as a reference; the service fetches it. Listing and
signing go through fsspec and the store's own package (s3fs, gcsfs or adlfs:
``pip install 'rfbatch[cloud]'``), which find their credentials as the official client's do
(``AWS_*`` and ``~/.aws``, ``GOOGLE_APPLICATION_CREDENTIALS``); Azure takes its account and
key or SAS token from ``AZURE_STORAGE_*``, and S3-compatible stores their address from
``AWS_ENDPOINT_URL``.

Names differ from the official client's on purpose: it names each reference by its base name,
so ``a/img.jpg`` and ``b/img.jpg`` collide in the batch; here the object's path below the base
is flattened by :func:`~rfbatch.member_names.member_name`, unique and deterministic.
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection, Mapping
from typing import Any

from rfbatch.api.schemas import ImageReference
from rfbatch.errors import ConfigError
from rfbatch.member_names import member_name

SCHEMES = ("s3", "gs", "gcs", "az", "abfs", "azure")
PRESIGN_SECONDS = 24 * 3600
_GLOB = re.compile(r"[*?\[]")
# The package each scheme needs beside fsspec (what the error names when it is missing).
_PACKAGE = {"s3": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs", "abfs": "adlfs"}
_PACKAGE["azure"] = "adlfs"


def is_cloud_path(source: str) -> bool:
    scheme, sep, _ = source.partition("://")
    return bool(sep) and scheme.lower() in SCHEMES


def split_path(path: str) -> tuple[str, str | None]:
    """``s3://b/cams/**/*.jpg`` → (``s3://b/cams``, ``**/*.jpg``); no glob → (path, None)."""
    scheme, _, rest = path.partition("://")
    parts = rest.strip("/").split("/")
    for i, part in enumerate(parts):
        if _GLOB.search(part):
            return f"{scheme}://{'/'.join(parts[:i])}", "/".join(parts[i:])
    return f"{scheme}://{'/'.join(parts)}", None


def glob_matcher(pattern: str) -> re.Pattern[str]:
    """A relative path pattern: ``**`` any number of folders (none included), ``*`` and ``?``
    within one name, ``[...]`` a set of characters."""
    out = []
    parts = pattern.split("/")
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if part == "**":
            out.append(".*" if last else "(?:[^/]+/)*")
            continue
        piece = ""
        for bit in re.split(r"(\*|\?|\[[^\]]*\])", part):
            if bit == "*":
                piece += "[^/]*"
            elif bit == "?":
                piece += "[^/]"
            elif bit.startswith("[") and bit.endswith("]") and len(bit) > 2:
                piece += "[" + bit[1:-1].replace("\\", "\\\\") + "]"
            else:
                piece += re.escape(bit)
        out.append(piece if last else piece + "/")
    return re.compile("".join(out))


def store_options(protocol: str, environ: Mapping[str, str]) -> dict[str, Any]:
    """What the store's filesystem needs beyond its own credential search."""
    options: dict[str, Any] = {}
    if protocol == "s3":
        if environ.get("AWS_ENDPOINT_URL"):  # S3-compatible stores (R2, MinIO)
            options["endpoint_url"] = environ["AWS_ENDPOINT_URL"]
            if environ.get("AWS_REGION"):
                options["client_kwargs"] = {"region_name": environ["AWS_REGION"]}
        if environ.get("AWS_PROFILE"):
            options["profile"] = environ["AWS_PROFILE"]
    elif protocol in ("az", "abfs", "azure"):
        account = environ.get("AZURE_STORAGE_ACCOUNT_NAME") or environ.get("AZURE_STORAGE_ACCOUNT")
        key = environ.get("AZURE_STORAGE_ACCOUNT_KEY") or environ.get("AZURE_STORAGE_KEY")
        if account:
            options["account_name"] = account
        if environ.get("AZURE_STORAGE_SAS_TOKEN"):
            options["sas_token"] = environ["AZURE_STORAGE_SAS_TOKEN"]
        elif key:
            options["account_key"] = key
    return options


def cloud_references(
    path: str,
    extensions: Collection[str],
    *,
    expiration: int = PRESIGN_SECONDS,
    environ: Mapping[str, str] = os.environ,
    filesystem: Any = None,
) -> list[ImageReference]:
    """The references of every matching object under ``path`` (blocking: it lists the store).

    Any failure of the store (no such bucket, no access, a missing package) is a
    :class:`~rfbatch.errors.ConfigError` naming the path, in one line.
    """
    base, pattern = split_path(path)
    protocol = base.partition("://")[0].lower()
    fs = filesystem if filesystem is not None else _filesystem(protocol, environ)
    matcher = glob_matcher(pattern) if pattern else None
    wanted = {e.lower().lstrip(".") for e in extensions}
    prefix = base.partition("://")[2].strip("/")
    refs: list[ImageReference] = []
    names: set[str] = set()
    try:
        if not fs.exists(base):
            raise ConfigError(f"{base}: no such bucket or folder (or no access to it)")
        for root, _folders, files in fs.walk(base):
            # Stores give folders with or without the scheme (and a memory store with a "/").
            folder = (str(root).partition("://")[2] or str(root)).strip("/")
            for file_name in sorted(files):
                if file_name.rpartition(".")[2].lower() not in wanted:
                    continue
                full = f"{folder}/{file_name}"
                rel = full[len(prefix) + 1 :] if full.startswith(prefix + "/") else file_name
                if matcher is not None and not matcher.fullmatch(rel):
                    continue
                name = member_name(rel, names.__contains__)
                names.add(name)
                refs.append(ImageReference(name=name, url=_sign(fs, protocol, full, expiration)))
    except ConfigError:
        raise
    except Exception as exc:  # the stores raise their own trees: any of them is "cannot list"
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"cannot list {path}: {reason}") from None
    if not refs:
        raise ConfigError(
            f"no media files under {path} (extensions taken: {', '.join(sorted(wanted))})"
        )
    return refs


def _filesystem(protocol: str, environ: Mapping[str, str]) -> Any:
    try:
        import fsspec  # only a cloud path needs it
    except ImportError:
        raise ConfigError(
            f"{protocol}:// paths need fsspec and {_PACKAGE.get(protocol, 'its store package')}: "
            "pip install 'rfbatch[cloud]'"
        ) from None
    try:
        return fsspec.filesystem(protocol, **store_options(protocol, environ))
    except ImportError:
        raise ConfigError(
            f"{protocol}:// paths need {_PACKAGE.get(protocol, 'its store package')}: "
            "pip install 'rfbatch[cloud]'"
        ) from None
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"cannot open {protocol}:// storage: {exc}") from None


def _sign(fs: Any, protocol: str, path: str, expiration: int) -> str:
    token = getattr(fs, "sas_token", None)
    if protocol in ("az", "abfs", "azure") and token:
        # A SAS token signs the whole account: fs.sign would want the account key instead.
        container, _, blob = path.partition("/")
        query = token if token.startswith("?") else f"?{token}"
        return f"{fs.account_url}/{container}/{blob}{query}"
    return str(fs.sign(f"{protocol}://{path}", expiration=expiration))
