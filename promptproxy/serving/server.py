"""`python app.py serve`: the app on gevent's WSGI server, so streams flow from day one."""

import http.client
import logging
import signal
import socket
import sys

import gevent
from gevent import pywsgi

from . import begin_stopping, http_errors

log = logging.getLogger(__name__)

# pywsgi's own limits: http.client's for headers, its own for the request line.
LIMITS = {"line": pywsgi.MAX_REQUEST_LINE, "fields": 100, "field": 65536}


class HeadersTooLarge(ValueError):
    """More header lines, or a longer one, than the server reads."""


class Handler(pywsgi.WSGIHandler):
    """pywsgi's handler with TCP_NODELAY, and its answers to requests it cannot
    read in the caller's JSON format instead of empty bodies."""

    def __init__(self, sock, *args, **kwargs):
        # pywsgi writes headers and body separately; without TCP_NODELAY, Nagle's
        # algorithm holds each keep-alive response back ~40 ms.
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        super().__init__(sock, *args, **kwargs)

    def MessageClass(self, *args):  # noqa: N802 (pywsgi's name)
        try:
            headers = super().MessageClass(*args)
        except http.client.HTTPException as error:  # over 100 header lines
            raise HeadersTooLarge(str(error)) from None
        if headers.status == "Line too long":
            raise HeadersTooLarge("header line too long")
        return headers

    def _handle_client_error(self, ex):
        if isinstance(ex, HeadersTooLarge):
            self.log_error("Invalid request (from %s): %s", self.client_address, ex)
            return "431", b""
        return super()._handle_client_error(ex)

    def handle_one_request(self):
        result = super().handle_one_request()
        if isinstance(result, tuple):  # pywsgi's own answer: the app never saw the request
            status = int(result[0])
            words = (self.requestline or "").split()
            path = http_errors.request_path(words[1] if len(words) > 1 else "")
            return result[0], http_errors.error_response(path, status, http_errors.message(status, **LIMITS))
        return result


def parse_bind(text):
    host, _, port = text.rpartition(":")
    return (host.strip("[]") or "127.0.0.1"), int(port)


def serve(app, bind="127.0.0.1:8090", grace=10):
    """Serve until SIGTERM or SIGINT, then finish open requests (up to `grace`
    seconds) and write every pending request row before exiting. An address that
    cannot be listened on is one line in the log and exit status 1."""
    from .. import stop

    host, port = parse_bind(bind)
    access_log = logging.getLogger("promptproxy.access") if app.config["PROMPTPROXY"]["ACCESS_LOG"] else None
    server = pywsgi.WSGIServer((host, port), app, handler_class=Handler, log=access_log, error_log=log)
    try:
        server.init_socket()
    except OSError as error:
        stop(app)
        log.error("Cannot listen on %s:%d: %s. Stop what uses it, or choose another address with "
                  "--http (for example --http %s:%d) or PROMPTPROXY_HTTP.",
                  host, port, error.strerror or error, host, port + 1)
        sys.exit(1)

    def stop_serving():
        begin_stopping()
        gevent.spawn(server.stop, grace)

    for signum in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(signum, stop_serving)
    log.info("PromptProxy listening on http://%s:%d (admin at /_/, API at /v1/)", host, port)
    try:
        server.serve_forever()
    finally:
        stop(app)
        log.info("PromptProxy stopped")
