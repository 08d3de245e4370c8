"""PromptProxy: a small self-hosted, OpenAI-compatible LLM gateway.

`create_app` builds the Flask application: data in SQLite under the data
directory, its long-lived parts (`services.Services`), the admin at /_/, the REST
API at /api/ and the proxy at /v1/.

Importing the package itself stays light: gunicorn's master imports our worker
class (promptproxy.serving.worker) before the worker patches the standard library for
gevent, and anything imported then is imported unpatched: requests/urllib3 break
HTTPS upstreams, and peewee's connection state would be shared by every greenlet.
So what the app needs is imported when `create_app` runs, in the worker.
"""

import atexit
import logging
import socket
from pathlib import Path

log = logging.getLogger("promptproxy")


def create_app(overrides=None):
    from . import config as settings
    from .data import load_peewee

    conf = settings.from_environ(overrides)
    settings.check(conf)
    load_peewee(postgresql=bool(conf["DATABASE_URL"]))

    from flask import Flask
    from flask_wtf.csrf import CSRFProtect
    from werkzeug.middleware.proxy_fix import ProxyFix

    from .accounting import costs, metrics, stats
    from .accounting.limits import Limiter
    from .accounting.recorder import Recorder, close_connection
    from .accounting.upstreams import Upstreams
    from .admin.sessions import AdminOnlySessions
    from .auth.throttle import LoginThrottle
    from .data import crypto, migrations
    from .data.catalog import Catalog
    from .data.db import ChangeListener, is_postgresql, open_database, use_writer
    from .data.writer import Writer
    from .services import Services

    if not logging.getLogger().handlers:  # under gunicorn; the CLI configures its own
        logging.basicConfig(level=conf["LOG_LEVEL"],
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    data_dir = conf["DATA_DIR"]
    session_secret, encryption_key = settings.load_secrets(data_dir)
    crypto.init(encryption_key, session_secret)

    app = Flask(__name__, template_folder="admin/templates")
    app.session_interface = AdminOnlySessions()
    if conf["TRUSTED_PROXIES"]:  # believe that many hops of X-Forwarded-For and -Proto
        hops = conf["TRUSTED_PROXIES"]
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)
    https = conf["PUBLIC_URL"].lower().startswith("https://")
    app.config.update(
        SECRET_KEY=session_secret,
        PROMPTPROXY=conf,
        MAX_CONTENT_LENGTH=conf["MAX_BODY_BYTES"],
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=https,  # browsers then never send the admin's cookies in clear
        REMEMBER_COOKIE_SECURE=https,
        REMEMBER_COOKIE_SAMESITE="Lax",
        WTF_CSRF_TIME_LIMIT=None,  # tied to the session instead of expiring mid-edit
        FLASK_ADMIN_SWATCH="default",
    )

    open_database(conf)
    migrations.upgrade(declared_models())
    stats.backfill()  # usage figures for requests recorded before the rollup existed
    app.teardown_request(_close_db)  # queries connect on demand; the proxy needs none

    from .admin import init_admin
    from .errors import init_errors
    from .feedback import feedback_api
    from .proxy import proxy
    from .rest.routes import api

    # data.db's single writer thread: request rows, and any write that must not run on the event loop
    writer = Writer("data.db", on_stop=close_connection)
    use_writer(writer)  # record writes from the admin and the REST API go there too
    catalog = Catalog(ttl=conf["CATALOG_TTL"])
    limiter = Limiter(limits_location(conf), defaults={
        kind: conf["DEFAULT_" + kind.upper()] for kind in ("rpm", "tpm", "rpd", "concurrency")},
        max_concurrency=conf["MAX_CONCURRENCY"], instance=f"{socket.gethostname()}:{Path(data_dir).resolve()}",
        spent=costs.spent_in_rows)
    Services(
        settings=conf,
        catalog=catalog,
        writer=writer,
        recorder=Recorder(data_dir, writer).start(),
        limiter=limiter,
        upstreams=Upstreams(limiter),
        throttle=LoginThrottle(),  # one for the admin's login and the REST API's, counted in data.db
        metrics=metrics.Metrics(),
        # every instance hears of a change as it commits, instead of within CATALOG_TTL
        listener=ChangeListener(conf["DATABASE_URL"], catalog.changed).start() if is_postgresql() else None,
    ).install(app)
    atexit.register(stop, app)  # write pending request rows when the process ends

    csrf = CSRFProtect(app)
    csrf.exempt(api)  # token-authenticated, no cookies
    csrf.exempt(proxy)
    csrf.exempt(feedback_api)
    app.register_blueprint(api)
    app.register_blueprint(proxy)
    app.register_blueprint(feedback_api)
    app.register_blueprint(metrics.page)
    init_admin(app)
    init_errors(app)

    app.add_url_rule("/favicon.ico", "favicon", lambda: ("", 204))
    announce_setup(app)
    return app


def limits_location(conf):
    """Where rate-limit counts live: the PostgreSQL database when there is one (so
    every instance counts together), else limits.db beside data.db."""
    from .data.db import make_private

    if conf["DATABASE_URL"]:
        return conf["DATABASE_URL"]
    path = Path(conf["DATA_DIR"]) / "limits.db"
    make_private(path)
    return str(path)


def declared_models():
    """Every table PromptProxy keeps in data.db (created when missing, see migrations.py)."""
    from .accounting import stats
    from .auth import superusers, throttle
    from .collections import ALL

    return [superusers.Superuser, stats.RequestStats, throttle.LoginFailure] + [c.model for c in ALL]


def stop(app):
    """Write every pending request row, end the writer threads and close the
    database's pooled connections. Idempotent, never raises."""
    from .data.db import db
    from .services import services

    services(app).stop()
    close_idle = getattr(db.obj, "close_idle", None)  # PostgreSQL's pool
    if close_idle:
        close_idle()


def _close_db(exc):
    from .data.db import db

    if not db.is_closed():
        db.close()


def announce_setup(app):
    """With no admin yet, print the one-time link that creates the first one
    (only whoever can read the server's log can claim a fresh server)."""
    from .auth import superusers
    from .data.db import db
    from .services import services

    with db.connection_context():
        if superusers.any_exist():
            return
    base = services(app).settings["PUBLIC_URL"] or "http://127.0.0.1:8090"
    link = f"{base.rstrip('/')}/_/setup/{superusers.setup_token(app.secret_key)}"
    log.warning("No admin account yet. Open this link to create one:\n\n    %s\n", link)
