"""Configuration: one frozen Settings object, built from the environment.

This module is the only reader of ``os.environ``. Every value is coerced and
validated here, so a typo in a deployment fails at start-up with a message that
names the variable, not deep inside a worker.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from moderation.errors import ConfigError

DEFAULT_DATA_DIR = "./var"


def _bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off", ""}:
        return False
    raise ConfigError(f"{name}={raw!r}: expected true/false")


def _int(name: str, raw: str, minimum: int | None = None) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r}: expected an integer") from None
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name}={raw!r}: must be >= {minimum}")
    return value


def _float(name: str, raw: str, lo: float | None = None, hi: float | None = None) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r}: expected a number") from None
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ConfigError(f"{name}={raw!r}: must be between {lo} and {hi}")
    return value


@dataclass(frozen=True)
class Settings:
    """Every tunable of the service. Field docs are printed by ``moderation config``."""

    # Storage and broker
    database_url: str = f"sqlite:///{DEFAULT_DATA_DIR}/moderation.db"
    kafka_bootstrap_servers: str = ""  # empty: `moderation up` starts the embedded broker
    uploads_topic: str = "uploads"
    decisions_topic: str = "moderation.decisions"
    dlq_topic: str = "uploads.dlq"
    consumer_group: str = "moderation-worker"
    kafka_session_timeout_ms: int = 10_000
    kafka_max_poll_records: int = 50
    kafka_max_poll_interval_ms: int = 300_000  # longest gap between polls before the group drops a worker
    # Static group membership (KIP-345): a name unique to this worker that survives
    # its restarts (the pod's name in Kubernetes); empty: dynamic membership
    kafka_group_instance_id: str = ""
    # Bounds on waiting for PostgreSQL in the worker, appeals and web roles (not in
    # migrations or shell commands); 0: none
    database_statement_timeout_ms: int = 30_000
    database_lock_timeout_ms: int = 10_000
    database_tcp_user_timeout_ms: int = 20_000
    data_dir: str = DEFAULT_DATA_DIR

    # Media
    dev_mode: bool = False  # allows file:// media URLs
    media_allowed_hosts: str = ""  # hosts, IPs or CIDRs media may come from although private/loopback
    media_max_bytes: int = 25 * 1024 * 1024
    media_connect_timeout_s: float = 5.0
    media_read_timeout_s: float = 15.0
    media_total_timeout_s: float = 30.0
    max_image_pixels: int = 50_000_000  # never decode more pixels; larger JPEGs decode at reduced scale
    decode_min_side: int = 768  # large JPEGs decode at 1/2, 1/4 or 1/8 scale to this shorter side; 0: off

    # Matching and routing
    pdq_match_distance: int = 31
    auto_remove_pdq_distance: int = 31
    pdq_min_quality: int = 50
    review_threshold: float = 0.6
    bank_refresh_seconds: float = 1.0
    publish_allow_decisions: bool = True
    pdq_variants: bool = True  # also look up rotated, mirrored and border-trimmed variants
    flood_max_matches: int = 100  # an entry matching this often within the window is quarantined; 0: off
    flood_window_seconds: int = 3600

    # Video
    video_seconds_per_hash: float = 1.0
    video_max_seconds: int = 600  # longer videos are hashed over their first VIDEO_MAX_SECONDS
    video_frame_min_quality: int = 50
    vpdq_min_frames: int = 3  # a vPDQ match auto-removes only with this many matching frames

    # Classifier
    # comma-separated model cards (models/<name>.toml), each optionally name=weight
    classifier_model: str = "open_nsfw,nsfwjs_mobilenet_v2_mid"
    models_dir: str = ""  # folder of model cards and ONNX files; empty: the repository's models/
    classifier_combine: str = "mean"  # mean (weighted) | max of the models' scores
    classifier_detector: str = ""  # nudenet: body-part boxes for the console (AGPL-3.0, optional extra)
    onnx_threads: int = 0  # intra-op threads per ONNX Runtime session; 0: one per core
    classify_batch_size: int = 8  # events classified together (one ONNX run per model)
    classify_batch_wait_ms: int = 200  # stop gathering a batch after this long, even if not full

    # Hash exchanges (moderation exchange sync|feedback)
    stopncii_api_url: str = "https://api.stopncii.org/v1"
    stopncii_subscription_key: str = field(default="", repr=False)  # a secret: never in logs
    stopncii_fetch_function_key: str = field(default="", repr=False)  # a secret: never in logs
    stopncii_feedback_function_key: str = field(default="", repr=False)  # a secret: never in logs
    stopncii_bank: str = "stopncii"
    ncmec_api_url: str = "https://report.cybertip.org/hashsharing"
    ncmec_username: str = ""
    ncmec_password: str = field(default="", repr=False)  # a secret: never in logs
    ncmec_member_ids: str = ""  # comma-separated; empty: every member's hashes
    ncmec_bank: str = "ncmec"

    # Review console
    secret_key: str = field(default="", repr=False)  # a secret: never in logs
    claim_lease_seconds: int = 300
    web_host: str = "127.0.0.1"
    web_port: int = 8080
    session_idle_seconds: int = 3600  # a console session ends after this long without a request
    session_max_seconds: int = 43200  # and after this long in any case (a new login is needed)
    login_max_failures: int = 5  # failed logins of one account in a row before it is locked
    login_lockout_seconds: int = 900
    login_attempts_per_minute: int = 10  # per client address, successful or not
    basic_auth_cache_seconds: int = 60  # a verified HTTP Basic password is not hashed again for this long
    sso_user_header: str = ""  # e.g. X-Forwarded-User: trusted only from SSO_TRUSTED_PROXIES; empty: off
    sso_trusted_proxies: str = ""  # comma-separated IPs or CIDRs of the reverse proxy that sets it
    # Queue order and SLAs (storage/queue.py)
    sla_hours: str = "ncii=48,default=48"  # review deadline per report reason (or routing reason)
    sla_near_hours: float = 6.0  # items with less time than this left are served first
    priority_point_minutes: float = 15.0  # one priority point is worth this much waiting time
    # Decisions (review.py)
    policy_reasons: str = ""  # code=Label;code=Label... ; empty: the built-in list
    four_eyes_removals: bool = False  # a removal that banks waits for a second moderator
    appeals_topic: str = "moderation.appeals"
    # Moderator wellbeing
    break_after_items: int = 100  # items viewed before a break is prompted; 0: never
    break_after_revealed_seconds: int = 900  # seconds of revealed media before a break; 0: never
    media_link_seconds: int = 300  # lifetime of a signed media link
    # Evidence
    evidence_key: str = field(default="", repr=False)  # a secret: 32 bytes, base64; see docs/evidence.md
    evidence_retention_days: int = 365  # evidence not under legal hold is purged after this

    # Operations
    metrics_port: int = 9100
    # Where workers and the appeals consumer serve /metrics and probes, and the
    # web role its /metrics: loopback by default (a laptop), all interfaces in
    # the container image.
    metrics_host: str = "127.0.0.1"
    web_metrics_port: int = 9101  # the web role's /metrics (never on the console's port); 0: none
    metrics_token: str = field(default="", repr=False)  # a secret: its bearer reads the console's /metrics
    log_format: str = "text"  # text | json
    log_level: str = "INFO"

    def with_overrides(self, **changes: Any) -> Settings:
        return replace(self, **changes)


# Environment variable -> (field, parser). Names are the field names upper-cased.
def _parser_for(name: str, kind: type) -> Any:
    if kind is bool:
        return lambda raw: _bool(name, raw)
    if kind is int:
        return lambda raw: _int(name, raw, minimum=0)
    if kind is float:
        return lambda raw: _float(name, raw, lo=0.0)
    return lambda raw: raw


_TYPES = {"bool": bool, "int": int, "float": float, "str": str}


def _read_secret_file(name: str, path: str) -> str:
    """A secret from a mounted file (a Kubernetes Secret volume, a Docker secret);
    one trailing newline is dropped. The error names the variable, never the value."""
    try:
        with open(path, encoding="utf-8") as fh:
            value = fh.read()
    except OSError as exc:
        raise ConfigError(f"{name}={path!r}: cannot read the secret file ({exc.strerror or exc})") from None
    return value[:-1] if value.endswith("\n") else value


def secret_names() -> list[str]:
    """Settings that are secrets: never logged; each may also come from <NAME>_FILE."""
    return [f.name.upper() for f in fields(Settings) if not f.repr]


def env_names() -> list[str]:
    return [f.name.upper() for f in fields(Settings)]


def load_settings(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Build Settings from ``environ`` (default: the process environment)."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for f in fields(Settings):
        name = f.name.upper()
        if not f.repr and f"{name}_FILE" in env:  # a secret mounted as a file
            if name in env:
                raise ConfigError(f"set {name} or {name}_FILE, not both")
            values[f.name] = _read_secret_file(f"{name}_FILE", env[f"{name}_FILE"])
        elif name in env:
            kind = _TYPES[f.type] if isinstance(f.type, str) else f.type
            values[f.name] = _parser_for(name, kind)(env[name])
    values.update(overrides)
    settings = Settings(**values)
    _validate(settings)
    return settings


def _validate(s: Settings) -> None:
    if not 0 <= s.pdq_match_distance <= 256:
        raise ConfigError(f"PDQ_MATCH_DISTANCE={s.pdq_match_distance}: must be 0..256")
    if s.auto_remove_pdq_distance > s.pdq_match_distance:
        raise ConfigError(
            "AUTO_REMOVE_PDQ_DISTANCE must not exceed PDQ_MATCH_DISTANCE "
            f"({s.auto_remove_pdq_distance} > {s.pdq_match_distance})"
        )
    if not 0.0 <= s.review_threshold <= 1.0:
        raise ConfigError(f"REVIEW_THRESHOLD={s.review_threshold}: must be between 0 and 1")
    if s.log_format not in {"text", "json"}:
        raise ConfigError(f"LOG_FORMAT={s.log_format!r}: expected text or json")
    if s.flood_window_seconds < 60:
        raise ConfigError("FLOOD_WINDOW_SECONDS must be at least 60")
    if s.video_seconds_per_hash <= 0:
        raise ConfigError("VIDEO_SECONDS_PER_HASH must be greater than 0")
    if s.classifier_combine not in {"mean", "max"}:
        raise ConfigError(f"CLASSIFIER_COMBINE={s.classifier_combine!r}: expected mean or max")
    if s.classify_batch_size < 1:
        raise ConfigError("CLASSIFY_BATCH_SIZE must be at least 1")
    if s.claim_lease_seconds < 10:
        raise ConfigError("CLAIM_LEASE_SECONDS must be at least 10")
    from moderation.policy import parse_reasons  # here: policy imports the domain types
    from moderation.queue_policy import parse_sla_hours

    _check_database_url(s.database_url)
    _check_group_instance_id(s.kafka_group_instance_id)
    _check_bootstrap_servers(s.kafka_bootstrap_servers)
    parse_reasons(s.policy_reasons)  # raises ConfigError naming POLICY_REASONS
    try:  # at start-up, not when the worker schedules its first queued item
        parse_sla_hours(s.sla_hours)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


DATABASE_URL_HINT = "expected postgresql://USER@HOST:5432/DATABASE or sqlite:///path/to/file.db"


def _check_database_url(url: str) -> None:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        raise ConfigError(f"DATABASE_URL is not a database URL: {DATABASE_URL_HINT}") from None
    backend = parsed.get_backend_name()
    if backend not in {"postgresql", "postgres", "sqlite"}:
        raise ConfigError(f"DATABASE_URL names an unsupported database {backend!r}: {DATABASE_URL_HINT}")


def _check_group_instance_id(value: str) -> None:
    """Empty, or what Kafka accepts as a group.instance.id."""
    if value and (len(value) > 249 or value in {".", ".."} or not set(value) <= _INSTANCE_ID_CHARS):
        raise ConfigError(
            f"KAFKA_GROUP_INSTANCE_ID={value!r}: use 1-249 of A-Z, a-z, 0-9, '.', '_', '-' "
            "(e.g. the pod name), unique to each worker"
        )


_INSTANCE_ID_CHARS = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")


def _check_bootstrap_servers(value: str) -> None:
    """Empty (the embedded broker) or comma-separated HOST:PORT entries."""
    for entry in (e.strip() for e in value.split(",") if e.strip()):
        host, _, port = entry.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(
                f"KAFKA_BOOTSTRAP_SERVERS entry {entry!r} is not HOST:PORT (e.g. kafka-1:9092,kafka-2:9092)"
            )
