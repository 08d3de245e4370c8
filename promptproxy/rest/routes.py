"""The REST API at /api/, PocketBase-style, for admins who script their set-up.

Every collection gets the same five routes, derived from its declaration:
list (with page, perPage, sort and filter), view, create, update and delete.
Errors have PocketBase's shape: {"status", "message", "data": {field: {code, message}}}.
"""

import math

import peewee
from flask import Blueprint, current_app, g, jsonify, request

from ..auth import superusers
from ..auth.throttle import attempt
from ..collections import BY_NAME
from ..data import records
from ..data.db import UNREACHABLE, is_postgresql
from ..services import services
from .filter_sql import FilterError, parse_filter, parse_sort

api = Blueprint("api", __name__, url_prefix="/api")

MAX_PER_PAGE = 500


class ApiError(Exception):
    def __init__(self, status, message, data=None):
        super().__init__(message)
        self.status, self.message, self.data = status, message, data or {}


@api.errorhandler(ApiError)
def _api_error(error):
    return error_response(error.status, error.message, error.data)


@api.errorhandler(records.RecordReadOnly)
def _read_only(error):
    return error_response(403, str(error))


def error_response(status, message, data=None):
    return jsonify(status=status, message=message, data=data or {}), status


def field_errors(invalid):
    return {name: {"code": e.code, "message": e.message} for name, e in invalid.errors.items()}


def json_body():
    try:
        body = request.get_json(silent=True)
    except RecursionError:  # nested deeper than Python's parser can follow
        raise ApiError(400, "The body is nested too deeply.") from None
    if not isinstance(body, dict):
        raise ApiError(400, "The body must be a JSON object.")
    return body


def require_admin():
    header = request.headers.get("Authorization", "")
    token = header.removeprefix("Bearer ").strip()
    admin = superusers.from_token(token, current_app.secret_key) if token else None
    if admin is None:
        raise ApiError(401, "The request requires a valid superuser authorization token.")
    g.admin = admin


def collection_or_404(name):
    collection = BY_NAME.get(name)
    if collection is None:
        raise ApiError(404, f"Missing collection {name!r}.")
    return collection


def record_or_404(collection, record_id):
    row = collection.model.get_or_none(collection.model.id == record_id)
    if row is None:
        raise ApiError(404, "The requested resource wasn't found.")
    return row


def int_arg(name, default, low, high):
    raw = request.args.get(name)
    if raw in (None, ""):
        return default
    try:
        return max(low, min(high, int(raw)))
    except ValueError:
        raise ApiError(400, f"{name} must be a whole number.") from None


def version_note(body):
    """A prompt's save may say what it changes: `note`, kept on the version it makes."""
    note = body.get("note")
    return note if isinstance(note, str) and note.strip() else None


@api.get("/health")
def health():
    return jsonify(code=200, message="API is healthy.", data={})


@api.post("/collections/_superusers/auth-with-password")
def auth_with_password():
    body = json_body()
    identity, password = str(body.get("identity", "")), str(body.get("password", ""))
    throttle = services().throttle
    who = attempt(identity)
    wait = throttle.wait(who)
    if wait:
        response = error_response(429, f"Too many failed attempts. Try again in {wait} seconds.")
        response[0].headers["Retry-After"] = str(wait)
        return response
    admin = superusers.authenticate(identity, password)
    if admin is None:
        throttle.failed(who)
        raise ApiError(400, "Failed to authenticate.")
    throttle.succeeded(who)
    return jsonify(token=superusers.issue_token(admin, current_app.secret_key), record=admin.to_json())


@api.get("/collections/<name>/records")
def list_records(name):
    require_admin()
    collection = collection_or_404(name)
    columns = collection.columns()
    page = int_arg("page", 1, 1, 1_000_000)
    per_page = int_arg("perPage", 30, 1, MAX_PER_PAGE)
    try:
        where = parse_filter(request.args.get("filter", ""), columns)
        order = parse_sort(request.args.get("sort", ""), columns) or parse_sort(collection.sort, columns)
    except FilterError as exc:
        raise ApiError(400, f"Invalid filter or sort: {exc}") from None
    query = collection.model.select()
    if where is not None:
        query = query.where(where)
    try:
        total = query.count()
        rows = list(query.order_by(*order, collection.model.id).paginate(page, per_page))
    except (peewee.OperationalError, peewee.ProgrammingError, peewee.DataError, OverflowError) as exc:
        # A filter can be well formed yet not run: too deep for SQLite's parser, or
        # comparing a text with a number in PostgreSQL. The database being down or
        # locked is not the filter's fault.
        if where is None or "locked" in str(exc) or (is_postgresql() and isinstance(exc, UNREACHABLE)):
            raise
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ApiError(400, f"Invalid filter: the database could not run it ({reason}).") from None
    return jsonify(page=page, perPage=per_page, totalItems=total,
                   totalPages=math.ceil(total / per_page),
                   items=[collection.to_json(row) for row in rows])


@api.get("/collections/<name>/records/<record_id>")
def view_record(name, record_id):
    require_admin()
    collection = collection_or_404(name)
    return jsonify(collection.to_json(record_or_404(collection, record_id)))


@api.post("/collections/<name>/records")
def create_record(name):
    require_admin()
    collection = collection_or_404(name)
    body = json_body()
    try:
        row, revealed = records.save(collection, body, by=g.admin.email, note=version_note(body))
    except records.RecordInvalid as invalid:
        raise ApiError(400, "Failed to create record.", field_errors(invalid)) from None
    return jsonify({**collection.to_json(row), **revealed})


@api.patch("/collections/<name>/records/<record_id>")
def update_record(name, record_id):
    require_admin()
    collection = collection_or_404(name)
    row = record_or_404(collection, record_id)
    body = json_body()
    try:
        row, _ = records.save(collection, body, row=row, by=g.admin.email, note=version_note(body))
    except records.RecordInvalid as invalid:
        raise ApiError(400, "Failed to update record.", field_errors(invalid)) from None
    return jsonify(collection.to_json(row))


@api.delete("/collections/<name>/records/<record_id>")
def delete_record(name, record_id):
    require_admin()
    collection = collection_or_404(name)
    row = record_or_404(collection, record_id)
    try:
        records.delete(collection, row)
    except records.RecordInUse as refused:
        raise ApiError(400, str(refused)) from None
    return "", 204
