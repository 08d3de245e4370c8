"""Admins ("superusers", as PocketBase calls them): who may open /_/ and the REST API."""

import hashlib
import hmac

import peewee
from flask_login import UserMixin
from itsdangerous import BadSignature, URLSafeTimedSerializer
from werkzeug.security import check_password_hash, generate_password_hash

from ..data.db import BaseModel, write
from ..data.fields import EMAIL_PATTERN, new_id, storable_problem, utcnow

TOKEN_MAX_AGE = 14 * 24 * 3600
MIN_PASSWORD = 8


class Superuser(UserMixin, BaseModel):
    id = peewee.CharField(primary_key=True, max_length=15, default=new_id)
    email = peewee.CharField(unique=True)
    password_hash = peewee.CharField()
    playground_key = peewee.TextField(null=True)  # their playground's gateway key, encrypted
    created = peewee.DateTimeField(default=utcnow)
    updated = peewee.DateTimeField(default=utcnow)

    class Meta:
        table_name = "_superusers"

    def to_json(self):
        from ..data.fields import format_datetime

        return {"id": self.id, "collectionName": "_superusers", "email": self.email,
                "created": format_datetime(self.created), "updated": format_datetime(self.updated)}


def any_exist():
    return Superuser.select().exists()


def check_credentials(email, password):
    """Problems with a new admin's email and password, as {field: message}."""
    problems = {}
    if not EMAIL_PATTERN.fullmatch(email or ""):
        problems["email"] = "Must be a valid email address."
    if len(password or "") < MIN_PASSWORD:
        problems["password"] = f"Must be at least {MIN_PASSWORD} characters."
    return problems


def upsert(email, password):
    """Create the admin, or set the password of an existing one. Returns (admin, created)."""
    email = email.strip().lower()
    password_hash = generate_password_hash(password)

    def save():
        admin = Superuser.get_or_none(Superuser.email == email)
        created = admin is None
        if created:
            admin = Superuser(email=email)
        admin.password_hash = password_hash
        admin.updated = utcnow()
        admin.save(force_insert=created)
        return admin, created
    return write(save)


def keep_playground_key(admin, token):
    """Remember the admin's playground key (`token`: the key encrypted by the caller)."""
    admin_id = admin.id  # read here: `admin` may be a proxy of this request's login
    write(lambda: Superuser.update(playground_key=token).where(Superuser.id == admin_id).execute())
    admin.playground_key = token


def authenticate(email, password):
    email = (email or "").strip().lower()
    storable = not storable_problem(email)  # a lone surrogate can't even be looked up
    admin = Superuser.get_or_none(Superuser.email == email) if storable else None
    if admin and check_password_hash(admin.password_hash, password or ""):
        return admin
    if admin is None:
        generate_password_hash("timing")  # take as long as a real check
    return None


def _serializer(secret):
    return URLSafeTimedSerializer(secret, salt="promptproxy-superuser-token")


def _password_stamp(admin):
    """Changes when the password does, so a new password ends old tokens."""
    return hashlib.sha256(admin.password_hash.encode()).hexdigest()[:16]


def issue_token(admin, secret):
    return _serializer(secret).dumps({"id": admin.id, "pw": _password_stamp(admin)})


def from_token(token, secret):
    try:
        data = _serializer(secret).loads(token, max_age=TOKEN_MAX_AGE)
    except BadSignature:
        return None
    admin = Superuser.get_or_none(Superuser.id == data.get("id"))
    if admin and hmac.compare_digest(_password_stamp(admin), data.get("pw", "")):
        return admin
    return None


def setup_token(secret):
    """The token in the one-time set-up link. Derived from the app secret so every
    worker prints and accepts the same link; useless once an admin exists."""
    return hmac.new(secret.encode(), b"promptproxy-first-admin", hashlib.sha256).hexdigest()[:32]
