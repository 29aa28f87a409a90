"""The data plane: streamed PUTs to signed URLs and verified downloads from them."""

from __future__ import annotations

from rfbatch.transfer.body import CHUNK_SIZE, BodySource, BytesBody
from rfbatch.transfer.signed import Transfer, TransferConfig, TransferStatistics

__all__ = [
    "CHUNK_SIZE",
    "BodySource",
    "BytesBody",
    "Transfer",
    "TransferConfig",
    "TransferStatistics",
]
