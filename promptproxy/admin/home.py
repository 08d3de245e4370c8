"""The admin's front door at /_/: first-run set-up, login, logout and the home page,
which is the usage dashboard (figures from /_/stats.json, charts drawn in the
browser with the Chart.js copy under admin/static, so it works offline)."""

import hashlib
import hmac
from functools import cache
from pathlib import Path
from urllib.parse import urlsplit

from flask import abort, current_app, flash, jsonify, redirect, request, url_for
from flask.helpers import send_from_directory
from flask_admin import AdminIndexView, expose
from flask_login import current_user, login_user, logout_user
from flask_wtf import FlaskForm
from wtforms import EmailField, PasswordField
from wtforms.validators import DataRequired, EqualTo

from ..accounting import stats
from ..auth import superusers
from ..auth.throttle import attempt
from ..collections import BY_NAME
from ..services import services
from .layout import record_count
from .spend import spend_csv

STATIC = Path(__file__).parent / "static"
ASSETS = {"chart.umd.min.js", "copy.js"}  # served at /_/assets/<name>, cached for a year


class LoginForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired()])
    password = PasswordField("Password", validators=[DataRequired()])


class SetupForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired()])
    password = PasswordField("Password", validators=[DataRequired()],
                             description=f"At least {superusers.MIN_PASSWORD} characters.")
    confirm = PasswordField("Password again",
                            validators=[DataRequired(), EqualTo("password", "The passwords differ.")])


def safe_next(target):
    """Only follow `next` to a path on this server: a single leading slash, then no
    backslash, whitespace or control character (browsers drop tabs and newlines,
    so "/\t/evil.example" would become "//evil.example")."""
    if not target or not target.startswith("/") or target.startswith("//"):
        return None
    if any(c == "\\" or c.isspace() or not c.isprintable() for c in target):
        return None
    parts = urlsplit(target)
    return target if not parts.scheme and not parts.netloc else None


@cache
def _content_hash(name):
    return hashlib.sha256((STATIC / name).read_bytes()).hexdigest()[:12]


def asset_url(name):
    return url_for("admin.asset_view", filename=name, v=_content_hash(name))


RANGE_LABELS = {"24h": "24\u00a0h", "7d": "7\u00a0d", "30d": "30\u00a0d", "month": "This\u00a0month"}  # buttons

# What a fresh install needs before its first answer, in the order the README walks it.
SETUP_STEPS = [
    ("users", "Add a user: someone who will call the gateway."),
    ("keys", "Give that user a key."),
    ("apis", "Add an upstream API (OpenAI, Ollama, vLLM, Anthropic, …) and test its connection."),
    ("models", "Add a model on that API (or import them from Test connection)."),
    ("prompts", "Store a system prompt, to call as <model>:<prompt>."),
]


class HomeView(AdminIndexView):
    def is_visible(self):
        return current_user.is_authenticated

    @expose("/")
    def index(self):
        if not current_user.is_authenticated:
            if not superusers.any_exist():
                return self.render("promptproxy/setup_pending.html")
            return redirect(url_for(".login_view"))
        steps = [(name, what, record_count(BY_NAME[name]) > 0) for name, what in SETUP_STEPS]
        return self.render("promptproxy/home.html", ranges=RANGE_LABELS, currency=services().settings["CURRENCY"],
                           asset_url=asset_url, steps=steps if not all(done for *_, done in steps) else [])

    @expose("/stats.json")
    def stats_view(self):
        """The dashboard's figures for ?range=24h|7d|30d|month."""
        if not current_user.is_authenticated:
            return jsonify(error="Log in to see usage."), 401
        range_ = request.args.get("range", "24h")
        if range_ not in stats.RANGES:
            return jsonify(error=f"range must be one of {', '.join(stats.RANGES)}"), 400
        response = jsonify(stats.summary(range_))
        response.headers["Cache-Control"] = "no-store"
        return response

    @expose("/spend.csv")
    def spend_view(self):
        """Spend per user per UTC day over ?range= (this month unless told), as CSV."""
        if not current_user.is_authenticated:
            return redirect(url_for(".login_view", next=request.full_path))
        range_ = request.args.get("range", "month")
        if range_ not in stats.RANGES:
            flash(f"The spend export's range must be one of {', '.join(stats.RANGES)}.", "error")
            return redirect(url_for(".index"))
        return spend_csv(range_)

    @expose("/assets/<filename>")
    def asset_view(self, filename):
        """Static files for the admin pages. URLs carry a content hash, so browsers
        may keep them for a year."""
        if filename not in ASSETS:
            abort(404)
        response = send_from_directory(STATIC, filename, max_age=365 * 24 * 3600)
        response.cache_control.public = True
        response.cache_control.immutable = True
        return response

    @expose("/login", methods=("GET", "POST"))
    def login_view(self):
        if not superusers.any_exist():
            return redirect(url_for(".index"))
        form = LoginForm()
        error = None
        if form.validate_on_submit():
            throttle = services().throttle
            who = attempt(form.email.data)
            wait = throttle.wait(who)
            if wait:
                error = f"Too many failed attempts. Try again in {wait} seconds."
            else:
                admin = superusers.authenticate(form.email.data, form.password.data)
                if admin:
                    throttle.succeeded(who)
                    login_user(admin)
                    return redirect(safe_next(request.args.get("next")) or url_for(".index"))
                throttle.failed(who)
                error = "Wrong email or password."
        return self.render("promptproxy/login.html", form=form, error=error), (401 if error else 200)

    @expose("/logout", methods=("POST",))
    def logout_view(self):
        logout_user()
        return redirect(url_for(".login_view"))

    @expose("/setup/<token>", methods=("GET", "POST"))
    def setup_view(self, token):
        expected = superusers.setup_token(current_app.secret_key)
        if superusers.any_exist() or not hmac.compare_digest(token, expected):
            flash("This set-up link is no longer valid." if superusers.any_exist()
                  else "This set-up link is not valid. Use the one printed in the server log.", "error")
            return redirect(url_for(".index"))
        form = SetupForm()
        if form.validate_on_submit():
            problems = superusers.check_credentials(form.email.data, form.password.data)
            for name, message in problems.items():
                form[name].errors = list(form[name].errors) + [message]
            if not problems:
                admin, _ = superusers.upsert(form.email.data, form.password.data)
                login_user(admin)
                flash("Your admin account is ready. Start by adding a user.", "success")
                return redirect(url_for(".index"))
        return self.render("promptproxy/setup.html", form=form)
