"""Local disk: discovering, settling, watching, packing and writing files.

This package is the only code in rfbatch that opens local files. Every blocking call (directory
walks, stats, reads, fsyncs) runs in a worker thread so the event loop never stalls on a disk.
"""

from __future__ import annotations
