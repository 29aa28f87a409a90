"""Durable state: the manifest of files, shards, batches, downloads and webhook events."""

from __future__ import annotations
