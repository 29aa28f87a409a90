"""Run by the reference venv's Python (it has OpenCV): make a short clip, or check videos.

``python clip.py make OUT.mp4`` encodes a few seeded noise frames with OpenCV's bundled FFmpeg
(``mp4v`` in an MP4 container). ``python clip.py check FILE...`` opens each file the way the
reference client does before it uploads a video (``cv2.VideoCapture``: opened, frame count, fps)
and prints one JSON object per file. This file imports nothing from the harness: it runs in
another virtualenv.
"""

from __future__ import annotations

import json
import sys

import cv2  # type: ignore[import-not-found, unused-ignore]
import numpy as np  # type: ignore[import-not-found, unused-ignore]

WIDTH, HEIGHT, FPS, FRAMES = 160, 120, 10, 20


def make(path: str) -> None:
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), FPS, (WIDTH, HEIGHT))
    if not writer.isOpened():
        raise SystemExit(f"OpenCV cannot write {path}")
    rng = np.random.default_rng(6)
    for _ in range(FRAMES):
        writer.write(rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8))
    writer.release()


def check(paths: list[str]) -> None:
    for path in paths:
        capture = cv2.VideoCapture(path)
        info = {
            "path": path,
            "opened": bool(capture.isOpened()),
            "frames": int(capture.get(cv2.CAP_PROP_FRAME_COUNT)),
            "fps": float(capture.get(cv2.CAP_PROP_FPS)),
            "width": int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
        }
        ok, _ = capture.read()
        info["first_frame_decoded"] = bool(ok)
        capture.release()
        print(json.dumps(info), flush=True)


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "make":
        make(sys.argv[2])
    elif len(sys.argv) >= 3 and sys.argv[1] == "check":
        check(sys.argv[2:])
    else:
        raise SystemExit("usage: clip.py make OUT.mp4 | clip.py check FILE...")
