"""Settings, read once from the environment (and from files in the data directory).

Every setting has an environment variable, listed in the README; `create_app`
also takes overrides, which is what the CLI and the tests use.
"""

import os
import secrets
from pathlib import Path

DEFAULTS = {
    "DATA_DIR": "pb_data",
    # postgresql://user:password@host:5432/dbname keeps everything shared in
    # PostgreSQL, for several instances; empty: SQLite files in DATA_DIR.
    "DATABASE_URL": "",
    "DATABASE_POOL": 20,  # PostgreSQL connections each worker may hold for reads
    "PUBLIC_URL": "",  # where admins reach the server; used in the set-up link
    "MAX_BODY_BYTES": 10 * 1024 * 1024,
    "LOG_LEVEL": "INFO",
    "CATALOG_TTL": 0.5,  # seconds an admin's edit may take to reach the proxy
    # Reverse-proxy hops in front of PromptProxy whose X-Forwarded-For is believed;
    # 0 trusts none and takes the connecting address as the client's.
    "TRUSTED_PROXIES": 0,
    # `app.py serve` logs one line per HTTP request when 1 (every call is a row in
    # `requests` anyway, and gunicorn keeps none by default either).
    "ACCESS_LOG": 0,
    # Instance-wide rate limits for users and keys that set none; 0 means no limit.
    "DEFAULT_RPM": 0,
    "DEFAULT_TPM": 0,
    "DEFAULT_RPD": 0,
    "DEFAULT_CONCURRENCY": 0,
    # Calls in flight on this instance at most, across its workers; 0 means no cap.
    "MAX_CONCURRENCY": 0,
    # The currency of models' prices, budgets and costs (a name shown beside amounts; nothing is converted).
    "CURRENCY": "USD",
    # The bearer token GET /metrics (Prometheus) asks for; empty, there is no /metrics.
    "METRICS_TOKEN": "",
}


def from_environ(overrides=None):
    """Settings from PROMPTPROXY_* variables, then the given overrides."""
    config = {}
    for name, default in DEFAULTS.items():
        raw = os.environ.get("PROMPTPROXY_" + name)
        if raw is None:
            config[name] = default
        else:
            config[name] = type(default)(raw) if isinstance(default, (int, float)) else raw
    config.update(overrides or {})
    config["DATA_DIR"] = str(Path(config["DATA_DIR"]))
    return config


def secret_from(data_dir, env_name, filename, make):
    """A secret from the environment, or from a 0600 file in the data directory,
    generated on first use so restarts keep sessions and encrypted keys valid."""
    value = os.environ.get(env_name)
    if value:
        return value
    path = Path(data_dir) / filename
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    value = make()
    # Write a private temp file, then link it into place: atomic, and when two
    # workers start at once the second one reads the first one's secret.
    tmp = path.with_name(f"{filename}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
    except FileExistsError:
        value = path.read_text().strip()
    finally:
        os.unlink(tmp)
    return value


class MissingSetting(RuntimeError):
    """A setting the server cannot start without; the message is one line naming it."""


# The secrets, each with the file in the data directory it is generated into when it
# is not set (with SQLite; with PostgreSQL every instance must be given them).
SECRET_FILES = {"PROMPTPROXY_SECRET_KEY": ".secret_key", "PROMPTPROXY_ENCRYPTION_KEY": ".encryption_key"}


def check(config):
    """Refuse settings the server cannot start with. With PostgreSQL, several
    instances share one database, so they must share its secrets too: they come
    from the environment, never from one instance's files (and the encryption key
    is never kept in the database it protects)."""
    if config["DATABASE_URL"]:
        if not config["DATABASE_URL"].startswith(("postgresql://", "postgres://")):
            raise MissingSetting("PROMPTPROXY_DATABASE_URL must be a postgresql:// URL")
        for name in SECRET_FILES:
            if not os.environ.get(name):
                raise MissingSetting(f"{name} must be set when PROMPTPROXY_DATABASE_URL is "
                                     "(every instance needs the same one)")


def load_secrets(data_dir):
    from .data import crypto

    Path(data_dir).mkdir(parents=True, exist_ok=True)
    session_secret = secret_from(data_dir, "PROMPTPROXY_SECRET_KEY", SECRET_FILES["PROMPTPROXY_SECRET_KEY"],
                                 lambda: secrets.token_urlsafe(48))
    encryption_key = secret_from(data_dir, "PROMPTPROXY_ENCRYPTION_KEY",
                                 SECRET_FILES["PROMPTPROXY_ENCRYPTION_KEY"], crypto.new_key)
    return session_secret, encryption_key
