"""Local disk: finding, settling and watching source files; reading them only as they were found
(tar shards, video bodies); writing results safely; and keeping free space above a floor.

This package is the only code in rfbatch that opens local files. Every blocking call (directory
walks, stats, reads, fsyncs) runs in a worker thread so the event loop never stalls on a disk.
"""

from __future__ import annotations
