"""One frozen settings tree: defaults < TOML file < environment < command-line flags.

Environment variables are ``RFBATCH_<SECTION>__<KEY>`` (``RFBATCH_UPLOAD__SHARD_WORKERS``),
plus the names inference-cli users already set: ``ROBOFLOW_API_KEY``, ``API_BASE_URL``,
``ROBOFLOW_API_REQUEST_TIMEOUT``, and ``ROBOFLOW_REGION`` / ``ROBOFLOW_ENVIRONMENT`` (which
choose the API's address when no URL is given).
Flags arrive as a nested dict of overrides. Any invalid value stops the start with one line naming
the key (:class:`rfbatch.errors.ConfigError`).
"""

from __future__ import annotations

import difflib
import os
import tomllib
from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from rfbatch.errors import ConfigError
from rfbatch.ids import validate_api_key
from rfbatch.media import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS
from rfbatch.redact import redact_url

MiB = 1024 * 1024
# Where adaptive concurrency starts: what a LAN needs (and what rfbatch ran at before it adapted).
UPLOADS_START = 6
DOWNLOADS_START = 8


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ApiSettings(_Section):
    key: SecretStr | None = None
    base_url: str = "https://api.roboflow.com"
    connect_timeout: float = Field(10.0, gt=0)
    read_timeout: float = Field(60.0, gt=0)
    max_concurrent_requests: int = Field(16, ge=1, le=256)
    retry_attempts: int = Field(6, ge=1, le=100)
    retry_timeout: float = Field(300.0, gt=0)
    # The wait before retry n: min(max, initial * 2**(n-1) + random(0, jitter)) seconds, or
    # longer when the server's Retry-After asks for it.
    retry_wait_initial: float = Field(0.25, ge=0)
    retry_wait_max: float = Field(15.0, ge=0)
    retry_wait_jitter: float = Field(1.0, ge=0)
    # At most this many attempts of a storage transfer (a signed URL) may end in HTTP 500. API
    # calls never send a request again after a 500, as the official client does not.
    retry_server_error_attempts: int = Field(3, ge=1, le=100)
    ca_bundle: Path | None = None
    # The most bytes read from one API response; a larger one is refused with a clear error.
    max_response_bytes: int = Field(64 * MiB, ge=1024)

    @field_validator("base_url")
    @classmethod
    def _no_trailing_slash(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")


class ScanSettings(_Section):
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    # The official client's sets (rfbatch.media), sorted so the example config reads the same.
    image_extensions: tuple[str, ...] = tuple(sorted(IMAGE_EXTENSIONS))
    video_extensions: tuple[str, ...] = tuple(sorted(VIDEO_EXTENSIONS))
    ignore_names: tuple[str, ...] = ("*.part", "*.tmp", "*.partial", ".*", "~*")
    min_age_seconds: float = Field(0.0, ge=0)
    max_size_bytes: int | None = Field(None, ge=1)
    follow_symlinks: bool = False
    settle_seconds: float = Field(2.0, ge=0)
    force_polling: bool = False
    # Quick rescans list only folders whose mtime moved; full ones list everything (they catch
    # files rewritten in place and retry files that failed). See localfs/watch.py.
    rescan_interval_seconds: float = Field(300.0, gt=0)
    # Six hours: a no-op full rescan of a million files costs ~30 CPU-s (0.15 % of a core so).
    full_rescan_interval_seconds: float = Field(21600.0, gt=0)
    # Events (inotify) bring new files at once; a network share (NFS, SMB) raises none: set
    # events = false there, and quick rescans look every poll_interval_seconds instead (as they
    # do by themselves when the system has no inotify watches left to give).
    events: bool = True
    poll_interval_seconds: float = Field(10.0, gt=0)


class UploadSettings(_Section):
    # The official client packs 256 images per shard (its MAX_SHARD_SIZE); the service takes
    # at most 500.
    shard_max_files: int = Field(256, ge=1, le=500)
    shard_max_bytes: int = Field(1024 * MiB, ge=1 * MiB)
    # The most shard PUTs and video PUTs at once. With adaptive_concurrency the PUTs start at
    # UPLOADS_START together and grow toward these while throughput grows (a WAN with capped
    # connections needs many; a LAN few); without, these many run whenever there is work.
    shard_workers: int = Field(16, ge=1, le=64)
    video_workers: int = Field(8, ge=1, le=64)
    adaptive_concurrency: bool = True
    # Bytes read from disk per worker-thread call. Each PUT holds two or three such chunks while
    # the link is slower than the disk: 512 KiB kept a TLS upload of 20,000 images at 96 MB
    # peak RSS (105 MB at 1 MiB) for the same CPU (benchmarks/README.md, WAN profile).
    chunk_bytes: int = Field(512 * 1024, ge=64 * 1024, le=64 * MiB)
    max_image_bytes: int = Field(20 * MiB, ge=1)
    ingest_timeout_seconds: float = Field(1800.0, gt=0)
    ingest_poll_seconds: float = Field(2.0, gt=0)
    # How long the batch count and every shard row must hold still before a count that stays
    # short is final and the files missing from the batch are named as rejected.
    ingest_settle_seconds: float = Field(15.0, gt=0, le=600)
    ingest_webhook_url: str | None = None
    # Upload bandwidth cap in bytes per second (unset: no cap), and the most file bytes that
    # may be in flight to storage at once.
    bytes_per_second: int | None = Field(None, ge=1024)
    max_in_flight_bytes: int = Field(2048 * MiB, ge=1 * MiB)


class JobSettings(_Section):
    """Defaults for jobs rfbatch starts; every key can be overridden by a flag."""

    workflow_id: str | None = None
    workflow_parameters: dict[str, Any] = Field(default_factory=dict)
    image_input_name: str | None = None
    machine_type: Literal["cpu", "gpu"] | None = None
    workers_per_machine: int | None = Field(None, ge=1, le=64)
    max_runtime_seconds: int | None = Field(None, ge=1)
    max_parallel_tasks: int | None = Field(None, ge=1)
    max_image_failure_rate: float | None = Field(None, ge=0.0, le=1.0)
    aggregation_format: Literal["csv", "jsonl"] | None = None
    persist_images_outputs: bool = False
    images_outputs_to_be_persisted: tuple[str, ...] = ()
    # The contract's maxVideoFPS is a number: a whole value goes out as an integer (as the
    # official client, whose flag takes integers, sends it), a fractional one as it is.
    max_video_fps: float | None = Field(None, gt=0)
    notifications_url: str | None = None
    # How often to ask for job status: fast without a webhook, slow when one is expected.
    poll_seconds: float = Field(5.0, gt=0)
    poll_seconds_with_webhook: float = Field(30.0, gt=0)
    wait_timeout_seconds: float = Field(7 * 24 * 3600.0, gt=0)


class ExportSettings(_Section):
    # The most downloads at once, across pages and parts: with adaptive_concurrency they start
    # at DOWNLOADS_START and grow toward this while throughput grows. Each TLS connection holds
    # about 0.6 MB of buffers: 32 kept the WAN export of 20,000 files under 100 MB.
    workers: int = Field(32, ge=1, le=256)
    adaptive_concurrency: bool = True
    # Listing pages fetched ahead of the fetchers.
    prefetch_pages: int = Field(4, ge=1, le=64)
    page_size: int | None = Field(None, ge=1, le=10_000)
    unpack: bool = True
    # Stop (with a clear error) rather than fill the disk below this many free bytes.
    min_free_bytes: int = Field(1024 * MiB, ge=0)
    # Download bandwidth cap in bytes per second (unset: no cap).
    bytes_per_second: int | None = Field(None, ge=1024)
    # Bytes gathered before each write to disk; a result no larger is written in one call.
    # Each fetcher holds about twice this: 256 KiB kept 8 fetchers of 100 MiB files at 85 MB
    # peak RSS (105 MB at 1 MiB) and was no slower (benchmarks/README.md, scenario 5).
    write_chunk_bytes: int = Field(256 * 1024, ge=16 * 1024, le=64 * MiB)


class WebhookSettings(_Section):
    # host:port for the local receiver (job and ingest notifications); unset = no receiver.
    listen: str | None = None
    # The URL the service should call (what reaches `listen` from outside).
    public_url: str | None = None
    # The exact Authorization header expected; default "Bearer rf_<workspace>".
    authorization: SecretStr | None = None
    max_body_bytes: int = Field(1 * MiB, ge=1024)

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        if value is not None:
            split_host_port(value)
        return value


def refuse_inside_sources(
    name: str,
    path: Path,
    sources: Iterable[Path],
    *,
    error: type[Exception] = ConfigError,
) -> None:
    """Raise ``error`` naming ``name`` when ``path`` (the real one) is in one of ``sources``:
    a file rfbatch writes or moves under a source is found again and sent again (a second
    upload and a second, paid job)."""
    where = os.path.realpath(path)
    for source in sources:
        root = os.path.realpath(source)
        if where == root or where.startswith(root.rstrip(os.sep) + os.sep):
            raise error(
                f"{name} {path} is inside source {source}: what rfbatch writes there "
                "would be uploaded again"
            )


def split_host_port(value: str) -> tuple[str, int]:
    """``"127.0.0.1:8787"`` → ``("127.0.0.1", 8787)``; ValueError when it is not HOST:PORT."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError("must be HOST:PORT, for example 127.0.0.1:8787")
    return host.strip("[]"), int(port)


class DaemonSettings(_Section):
    """``rfbatch run``: what to watch, how to cut batches, where results go."""

    sources: tuple[Path, ...] = ()
    output_dir: Path | None = None
    batch_prefix: str = Field("rfbatch", pattern=r"^[a-z0-9_-]{1,40}$")
    batch_window_seconds: float = Field(3600.0, gt=0)
    batch_max_items: int = Field(10_000, ge=1)
    # A partial shard is sent once no new image has arrived for this long.
    shard_linger_seconds: float = Field(5.0, gt=0)
    # What to do with a source file once its batch's ingest is confirmed.
    after_ingest: Literal["keep", "move", "delete"] = "keep"
    move_to: Path | None = None
    shutdown_grace_seconds: float = Field(30.0, ge=0)
    # Local HTTP server: /healthz, /readyz, /metrics and the webhook receiver ("" disables it).
    http_listen: str = "127.0.0.1:9464"
    # Intake pauses while the state or output disk has less free space than this.
    min_free_bytes: int = Field(512 * MiB, ge=0)
    # How often sealed batches are checked for their next step.
    lifecycle_poll_seconds: float = Field(2.0, gt=0)

    @field_validator("sources", "output_dir", "move_to")
    @classmethod
    def _expand_paths(cls, value: Any) -> Any:
        if isinstance(value, Path):
            return value.expanduser()
        if isinstance(value, tuple):
            return tuple(Path(v).expanduser() for v in value)
        return value

    @field_validator("http_listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        if value:
            split_host_port(value)
        return value

    @model_validator(mode="after")
    def _move_needs_target(self) -> DaemonSettings:
        if self.after_ingest == "move" and self.move_to is None:
            raise ValueError("after_ingest = 'move' needs move_to")
        return self


class StateSettings(_Section):
    dir: Path = Field(default_factory=lambda: _default_state_dir())
    # The daemon forgets files that left the source (and batches long done) after this many
    # days since their last change; within it, an unchanged file is never sent again.
    retention_days: float = Field(3.0, gt=0)
    # A PostgreSQL ledger (postgresql://user@host/db) instead of SQLite in `dir`; shown with
    # its password masked.
    url: str | None = None
    # A fleet on one PostgreSQL ledger: this worker's name (default host:pid), and the seconds
    # its claims outlive its last heartbeat (peers take a dead worker's work over after that).
    worker_id: str | None = Field(None, min_length=1, max_length=200)
    lease_seconds: float = Field(30.0, ge=1.0, le=3600.0)

    @field_validator("dir")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser()

    @field_validator("url")
    @classmethod
    def _postgres_only(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("postgresql://", "postgres://")):
            raise ValueError("must be a postgresql:// URL (unset: SQLite in state.dir)")
        return value

    @field_serializer("url")
    def _masked(self, value: str | None) -> str | None:
        return None if value is None else redact_url(value)


class LogSettings(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


def _default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "rfbatch"


# The TOML path is chosen at run time; pydantic-settings builds sources from the class, so the
# path reaches the source through this context variable (set only inside load_settings).
_toml_path: ContextVar[Path | None] = ContextVar("rfbatch_toml_path", default=None)


class _TomlSource(PydanticBaseSettingsSource):
    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = _toml_path.get()
        if path is None:
            return {}
        try:
            with path.open("rb") as fh:
                return tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(
                f"config file {path} is not UTF-8 text (byte {exc.start}): save it as UTF-8"
            ) from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None


class _InferenceCliEnv(PydanticBaseSettingsSource):
    """``ROBOFLOW_API_KEY``, ``API_BASE_URL`` and ``ROBOFLOW_API_REQUEST_TIMEOUT``, as
    inference-cli users already have them set."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        api: dict[str, Any] = {}
        if key := os.environ.get("ROBOFLOW_API_KEY"):
            api["key"] = key
        if url := os.environ.get("API_BASE_URL"):
            api["base_url"] = url
        if timeout := os.environ.get("ROBOFLOW_API_REQUEST_TIMEOUT"):
            api["read_timeout"] = timeout
        return {"api": api} if api else {}


# The API's address by region and environment, as the official client maps them
# (inference_sdk/regions.py: ROBOFLOW_REGION us|eu, ROBOFLOW_ENVIRONMENT prod|staging, any value
# but "prod" meaning staging). Its legacy PROJECT variable is not honoured: that name is set in
# many shells and CI systems for other reasons, and would send requests to staging unasked.
REGIONAL_BASE_URLS = {
    ("us", "prod"): "https://api.roboflow.com",
    ("us", "staging"): "https://api.roboflow.one",
    ("eu", "prod"): "https://api.roboflow.eu",
    ("eu", "staging"): "https://api.roboflow-eu.one",
}


def regional_choice(environ: Mapping[str, str] | None = None) -> tuple[str, str, str] | None:
    """(region, environment, the variables that chose them) when the environment names either,
    else ``None``. An unknown region is a :class:`ConfigError`: sending a European workspace's
    data to the US endpoint is no fallback (the official client warns and does just that)."""
    env = os.environ if environ is None else environ
    region_var = env.get("ROBOFLOW_REGION", "").strip().lower()
    env_var = env.get("ROBOFLOW_ENVIRONMENT", "").strip().lower()
    if not region_var and not env_var:
        return None
    region = region_var or "us"
    if region not in ("us", "eu"):
        raise ConfigError(
            f"ROBOFLOW_REGION {region_var!r} is not a region: use us or eu "
            "(or set API_BASE_URL to the address itself)"
        )
    environment = "prod" if env_var in ("", "prod") else "staging"
    said = [
        f"{name}={value}"
        for name, value in (("ROBOFLOW_REGION", region_var), ("ROBOFLOW_ENVIRONMENT", env_var))
        if value
    ]
    return region, environment, ", ".join(said)


class _RegionSource(PydanticBaseSettingsSource):
    """The base URL of the region and environment named in the environment: below an explicit
    URL anywhere (flag, RFBATCH_API__BASE_URL, API_BASE_URL, the file), above the default."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        choice = regional_choice()
        if choice is None:
            return {}
        region, environment, _ = choice
        return {"api": {"base_url": REGIONAL_BASE_URLS[(region, environment)]}}


def base_url_origin(config_file: Path | None) -> str:
    """Where ``api.base_url`` came from, in the order :class:`Settings` applies its sources."""
    for name in ("RFBATCH_API__BASE_URL", "API_BASE_URL"):
        if os.environ.get(name):
            return name
    if config_file is not None:
        token = _toml_path.set(config_file)
        try:
            in_file = "base_url" in (_TomlSource(Settings)().get("api") or {})
        finally:
            _toml_path.reset(token)
        if in_file:
            return f"{config_file} [api] base_url"
    choice = regional_choice()
    return choice[2] if choice is not None else "the default"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="RFBATCH_",
        env_nested_delimiter="__",
        frozen=True,
        extra="forbid",
        nested_model_default_partial_update=True,
    )

    api: ApiSettings = ApiSettings()
    scan: ScanSettings = ScanSettings()
    upload: UploadSettings = UploadSettings()
    job: JobSettings = JobSettings()
    export: ExportSettings = ExportSettings()
    webhook: WebhookSettings = WebhookSettings()
    daemon: DaemonSettings = DaemonSettings()
    state: StateSettings = StateSettings()
    log: LogSettings = LogSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Earlier sources win: flags, then RFBATCH_*, then inference-cli's names, then the file,
        # then the address of the region the environment names.
        return (
            init_settings,
            env_settings,
            _InferenceCliEnv(settings_cls),
            _TomlSource(settings_cls),
            _RegionSource(settings_cls),
        )

    @model_validator(mode="after")
    def _nothing_written_inside_a_source(self) -> Settings:
        # A file rfbatch writes or moves under a watched folder is found again and sent again:
        # a second upload and a second, paid job. Refused before any work starts.
        d = self.daemon
        written = {"state.dir": self.state.dir, "daemon.output_dir": d.output_dir}
        if d.after_ingest == "move":
            written["daemon.move_to"] = d.move_to
        for key, path in written.items():
            if path is not None:
                refuse_inside_sources(key, path, d.sources, error=ValueError)
        return self

    def api_key(self) -> str:
        """The API key (trimmed), or a ConfigError saying how to provide a usable one."""
        return validate_api_key(None if self.api.key is None else self.api.key.get_secret_value())


def load_settings(
    config_file: Path | None = None, overrides: Mapping[str, Any] | None = None
) -> Settings:
    """Build the settings tree, or raise ConfigError with one line naming the bad key."""
    token = _toml_path.set(config_file)
    try:
        return Settings(**_drop_none(overrides or {}))
    except ValidationError as exc:
        raise ConfigError(_first_error(exc)) from None
    finally:
        _toml_path.reset(token)


def _drop_none(tree: Mapping[str, Any]) -> dict[str, Any]:
    # Flags left unset arrive as None and must not mask the file or the environment.
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            nested = _drop_none(value)
            if nested:
                out[key] = nested
        elif value is not None:
            out[key] = value
    return out


def _first_error(exc: ValidationError) -> str:
    errors = exc.errors()
    first = errors[0]
    key = ".".join(str(part) for part in first["loc"])
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    if first["type"] == "extra_forbidden":
        return f"invalid config: unknown key {key!r}{more}"
    message = first["msg"].removeprefix("Value error, ")
    # A rule across sections has no single key: its message names the keys itself.
    return f"invalid config: {key}: {message}{more}" if key else f"invalid config: {message}{more}"


def unknown_env_keys(environ: Mapping[str, str] | None = None) -> list[str]:
    """A warning for each ``RFBATCH_*`` variable that names no setting, with the closest one.

    pydantic-settings ignores such variables: a typo would silently leave the default in force.
    """
    env = os.environ if environ is None else environ
    known = [
        f"RFBATCH_{section.upper()}__{key.upper()}"
        for section, field in Settings.model_fields.items()
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)
        for key in field.annotation.model_fields
    ]
    warnings = []
    for name in sorted(n for n in env if n.upper().startswith("RFBATCH_")):
        if name.upper() in known:
            continue
        close = difflib.get_close_matches(name.upper(), known, n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]}?)" if close else ""
        warnings.append(f"{name} is not a setting and is ignored{hint}")
    return warnings
