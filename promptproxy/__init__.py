"""PromptProxy: a small self-hosted, OpenAI-compatible LLM gateway.

`create_app` builds the Flask application: data in SQLite under the data
directory, the admin at /_/, the REST API at /api/ and the proxy at /v1/.
"""

import atexit
import logging
from pathlib import Path

from flask import Flask
from flask.sessions import SecureCookieSessionInterface
from flask_wtf.csrf import CSRFProtect

from . import config as settings
from . import crypto, stats, superusers
from .catalog import Catalog
from .collections import ALL
from .db import db, open_database, upgrade
from .limits import Limiter
from .recorder import Recorder, close_connection
from .writer import Writer

log = logging.getLogger("promptproxy")


def create_app(overrides=None):
    conf = settings.from_environ(overrides)
    if not logging.getLogger().handlers:  # under gunicorn; the CLI configures its own
        logging.basicConfig(level=conf["LOG_LEVEL"],
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    data_dir = conf["DATA_DIR"]
    session_secret, encryption_key = settings.load_secrets(data_dir)
    crypto.init(encryption_key)

    app = Flask(__name__, template_folder="admin/templates")
    app.session_interface = AdminOnlySessions()
    app.config.update(
        SECRET_KEY=session_secret,
        PROMPTPROXY=conf,
        MAX_CONTENT_LENGTH=conf["MAX_BODY_BYTES"],
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        WTF_CSRF_TIME_LIMIT=None,  # tied to the session instead of expiring mid-edit
        FLASK_ADMIN_SWATCH="default",
    )

    open_database(data_dir)
    upgrade([superusers.Superuser, stats.RequestStats] + [c.model for c in ALL])
    stats.backfill()  # usage figures for requests recorded before the rollup existed
    app.teardown_request(_close_db)  # queries connect on demand; the proxy needs none

    from .admin import init_admin
    from .api import api
    from .errors import init_errors
    from .proxy import proxy

    app.extensions["promptproxy.catalog"] = Catalog(ttl=conf["CATALOG_TTL"])
    limiter = app.extensions["promptproxy.limiter"] = Limiter(
        str(Path(data_dir) / "limits.db"),
        defaults={kind: conf["DEFAULT_" + kind.upper()] for kind in ("rpm", "tpm", "rpd", "concurrency")})
    # data.db's single writer thread: request rows, and any write that must not run on the event loop
    writer = app.extensions["promptproxy.writer"] = Writer("data.db", on_stop=close_connection)
    recorder = app.extensions["promptproxy.recorder"] = Recorder(data_dir, writer).start()
    atexit.register(stop, app)  # write pending request rows when the process ends

    csrf = CSRFProtect(app)
    csrf.exempt(api)  # token-authenticated, no cookies
    csrf.exempt(proxy)
    app.register_blueprint(api)
    app.register_blueprint(proxy)
    init_admin(app)
    init_errors(app)

    app.add_url_rule("/favicon.ico", "favicon", lambda: ("", 204))
    announce_setup(app)
    return app


class AdminOnlySessions(SecureCookieSessionInterface):
    """Only the admin pages have a cookie session. The proxy and the REST API are
    authenticated by key or token on every call, and skipping the session there
    saves its cookie signing work on the hot path."""

    def open_session(self, app, request):
        if request.path.startswith(("/v1/", "/api/")):
            return None  # Flask substitutes a read-only null session
        return super().open_session(app, request)


def stop(app):
    """Write every pending request row and end the writer threads. Idempotent, never raises."""
    app.extensions["promptproxy.recorder"].stop()  # stops the data writer after the last rows
    app.extensions["promptproxy.limiter"].stop()


def _close_db(exc):
    if not db.is_closed():
        db.close()


def announce_setup(app):
    """With no admin yet, print the one-time link that creates the first one
    (only whoever can read the server's log can claim a fresh server)."""
    with db.connection_context():
        if superusers.any_exist():
            return
    base = app.config["PROMPTPROXY"]["PUBLIC_URL"] or "http://127.0.0.1:8090"
    link = f"{base.rstrip('/')}/_/setup/{superusers.setup_token(app.secret_key)}"
    log.warning("No admin account yet. Open this link to create one:\n\n    %s\n", link)
