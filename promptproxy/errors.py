"""Errors in the caller's own format: PocketBase JSON under /api/, Anthropic JSON
under /v1/messages, OpenAI JSON elsewhere under /v1/, and Flask's plain pages
elsewhere. Never a stack trace. The OpenAI and Anthropic shapes are the providers'."""

import logging

from flask import jsonify, request
from werkzeug.exceptions import HTTPException, InternalServerError, ServiceUnavailable

from .data.db import UNREACHABLE
from .providers.anthropic.errors import error_to_anthropic
from .providers.openai import error_body

log = logging.getLogger(__name__)


def shown(text, limit=100):
    """A client's string as quoted back in an error: never all of a huge one."""
    return text if len(text) <= limit else text[:limit] + "…"


class ProxyError(Exception):
    """A refusal of a /v1 call in the caller's error shape, recorded on the request row.
    `upstream_error` says how the upstream failed when that is the cause (a kind
    counted in the metrics)."""

    def __init__(self, status, message, code=None, param=None, type_=None, headers=None, upstream_error=None):
        super().__init__(message)
        self.status, self.message, self.code, self.param, self.type = status, message, code, param, type_
        self.headers = headers or {}
        self.upstream_error = upstream_error

    def response(self, extra_headers=None, client="openai"):
        if client == "anthropic":
            response, status = anthropic_error(self.status, self.message)
        else:
            response, status = openai_error(self.status, self.message, self.type, self.code, self.param)
        response.headers.update({**self.headers, **(extra_headers or {})})
        return response, status


def database_unavailable(error):
    """The 503 for a call made while the database cannot be reached (a PostgreSQL
    restart, SQLite locked past its timeout): the caller may simply try again."""
    log.error("the database is unavailable: %s", str(error).splitlines()[0] if str(error) else type(error).__name__)
    return ProxyError(503, "PromptProxy's database is unavailable right now; try again shortly.",
                      type_="api_error", code="database_unavailable", headers={"Retry-After": "1"})


def openai_error(status, message, type_=None, code=None, param=None):
    """An OpenAI-style error response: {"error": {"message", "type", "param", "code"}}."""
    return jsonify(error_body(status, message, type_, code, param)), status


def anthropic_error(status, message):
    """An Anthropic-style error response: {"type": "error", "error": {"type", "message"}}."""
    status, body = error_to_anthropic(status, {"error": {"message": message}})
    return jsonify(body), status


def speaks_anthropic(path):
    """Anthropic's SDKs and Claude Code call /v1/messages and what lies under it."""
    return path == "/v1/messages" or path.startswith("/v1/messages/")


def init_errors(app):
    @app.errorhandler(HTTPException)
    def http_error(error):
        if speaks_anthropic(request.path):
            return anthropic_error(error.code, error.description)
        if request.path.startswith("/v1/") or request.path == "/v1":
            return openai_error(error.code, error.description)
        if request.path.startswith("/api/"):
            return jsonify(status=error.code, message=error.description, data={}), error.code
        return error

    @app.errorhandler(Exception)
    def unexpected_error(error):
        if isinstance(error, UNREACHABLE):
            refused = database_unavailable(error)
            if speaks_anthropic(request.path) or request.path.startswith("/v1"):
                return refused.response(client="anthropic" if speaks_anthropic(request.path) else "openai")
            unavailable = ServiceUnavailable(refused.message)
            unavailable.retry_after = 1
            return http_error(unavailable)
        log.exception("unexpected error on %s %s", request.method, request.path)
        return http_error(InternalServerError("Something went wrong on the server; see its log."))
