# rfbatch in a container beside camera storage.
#   docker build -t rfbatch .
#   docker run -e ROBOFLOW_API_KEY=... -v /mnt/cameras:/data:ro -v rfbatch-state:/state \
#              -v /srv/results:/output rfbatch run -c /etc/rfbatch/config.toml
# Bind mounts and network shares do not deliver inotify events: set WATCHFILES_FORCE_POLLING=1
# (or [scan] force_polling = true) so the watcher polls.
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
ENV RFBATCH_STATE__DIR=/state \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
VOLUME ["/state", "/output"]
USER rfbatch
WORKDIR /state
# Exec form: rfbatch is PID 1's child-free process and receives SIGTERM itself, so it drains cleanly.
ENTRYPOINT ["rfbatch"]
CMD ["--help"]
