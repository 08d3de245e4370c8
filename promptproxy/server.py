"""`python app.py serve`: the app on gevent's WSGI server, so streams flow from day one."""

import logging
import signal
import socket

import gevent
from gevent import pywsgi

log = logging.getLogger(__name__)


class NoDelayHandler(pywsgi.WSGIHandler):
    """pywsgi writes headers and body separately; without TCP_NODELAY, Nagle's
    algorithm holds each keep-alive response back ~40 ms."""

    def __init__(self, sock, *args, **kwargs):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        super().__init__(sock, *args, **kwargs)


def parse_bind(text):
    host, _, port = text.rpartition(":")
    return (host.strip("[]") or "127.0.0.1"), int(port)


def serve(app, bind="127.0.0.1:8090", grace=10):
    """Serve until SIGTERM or SIGINT, then finish open requests (up to `grace`
    seconds) and write every pending request row before exiting."""
    host, port = parse_bind(bind)
    server = pywsgi.WSGIServer((host, port), app, handler_class=NoDelayHandler,
                               log=logging.getLogger("promptproxy.access"), error_log=log)
    for signum in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(signum, lambda: gevent.spawn(server.stop, grace))
    log.info("PromptProxy listening on http://%s:%d (admin at /_/, API at /v1/)", host, port)
    try:
        server.serve_forever()
    finally:
        from . import stop

        stop(app)
        log.info("PromptProxy stopped")
