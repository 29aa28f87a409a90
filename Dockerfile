# rfbatch in a container beside camera storage.
#   docker build -t rfbatch .
#   docker run -e ROBOFLOW_API_KEY=... -v /mnt/cameras:/data:ro -v rfbatch-state:/state \
#              -v /srv/results:/output rfbatch run -c /etc/rfbatch/config.toml
# Network shares (NFS, SMB) deliver no inotify events: set [scan] events = false (quick
# rescans list only folders that changed). The container shares the host's inotify watch limit
# (fs.inotify.max_user_watches); when it runs out rfbatch says so (watch.limit,
# rfbatch_watch_limit_reached) and finds new files by quick rescans (README, "Big trees").
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-cache-dir --disable-pip-version-check --prefix=/install .

FROM python:3.11-slim
COPY --from=build /install /usr/local
RUN useradd --system --uid 10001 --home-dir /state --shell /usr/sbin/nologin rfbatch \
    && mkdir -p /state /output \
    && chown rfbatch:rfbatch /state /output
# MALLOC_ARENA_MAX: worker threads would each grow a glibc arena; two keep a months-long
# process's memory flat (measured by make soak).
ENV RFBATCH_STATE__DIR=/state \
    MALLOC_ARENA_MAX=2 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
VOLUME ["/state", "/output"]
USER rfbatch
WORKDIR /state
# Exec form: rfbatch runs as PID 1 and receives SIGTERM itself, so it drains cleanly.
# The daemon serves /healthz on 127.0.0.1:9464 by default ([daemon] http_listen); the check runs
# inside the container, so loopback is right. Python does the probe: the slim image has no curl.
HEALTHCHECK --interval=30s --timeout=10s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9464/healthz', timeout=5)"]
ENTRYPOINT ["rfbatch"]
CMD ["run", "-c", "/etc/rfbatch/config.toml"]
