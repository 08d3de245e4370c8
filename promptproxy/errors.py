"""Errors in the caller's own format: PocketBase JSON under /api/, Anthropic JSON
under /v1/messages, OpenAI JSON elsewhere under /v1/, and Flask's plain pages
elsewhere. Never a stack trace."""

import logging

from flask import jsonify, request
from werkzeug.exceptions import HTTPException, InternalServerError

from .providers.anthropic import error_to_anthropic

log = logging.getLogger(__name__)

OPENAI_TYPES = {400: "invalid_request_error", 401: "authentication_error",
                403: "permission_error", 404: "not_found_error", 413: "invalid_request_error",
                429: "rate_limit_error"}


def openai_error(status, message, type_=None, code=None, param=None):
    """An OpenAI-style error response: {"error": {"message", "type", "param", "code"}}."""
    body = {"error": {"message": message,
                      "type": type_ or OPENAI_TYPES.get(status, "api_error"),
                      "param": param, "code": code}}
    return jsonify(body), status


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
        log.exception("unexpected error on %s %s", request.method, request.path)
        return http_error(InternalServerError("Something went wrong on the server; see its log."))
