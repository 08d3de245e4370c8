"""gunicorn's gevent worker, with its own error answers in the caller's format.

    gunicorn -k promptproxy.serving.worker.GeventWorker app:app

gunicorn answers a request it cannot read (headers over its limits, a request
line too long, broken HTTP) with an HTML page before the app ever sees it. This
worker lets gunicorn choose the status and log as it does, and writes the answer
as JSON in the format of the path that was asked for (see http_errors.py). As
gunicorn's master starts, the worker class makes the directory where the workers
keep their Prometheus figures (see metrics_dir.py).

gunicorn's master imports this module before the worker patches the standard
library: keep its imports to gunicorn and the standard library.
"""

import re
import traceback

from gunicorn.http.message import Request
from gunicorn.workers import ggevent

from . import begin_stopping, http_errors

STATUS_LINE = re.compile(rb"HTTP/1\.[01] (\d{3}) ")


class GeventWorker(ggevent.GeventWorker):

    @classmethod
    def check_config(cls, cfg, log):
        """Run by gunicorn's master once as it starts, before it forks any worker:
        refuse settings the app cannot start with, in one line, instead of every
        worker failing to boot; then prepare the directory of the metrics' files."""
        from ..config import MissingSetting, check, from_environ
        from . import metrics_dir

        try:
            check(from_environ())
        except MissingSetting as missing:
            log.error("PromptProxy cannot start: %s", missing)
            raise SystemExit(2) from None
        log.info("Prometheus figures of this server are kept in %s", metrics_dir.prepare())

    def handle_exit(self, sig, frame):
        begin_stopping()  # SIGTERM: open live logs end, so the graceful stop is quick
        super().handle_exit(sig, frame)

    def handle_quit(self, sig, frame):
        begin_stopping()
        super().handle_quit(sig, frame)

    def handle_error(self, req, client, addr, exc):
        page = WrittenPage()
        super().handle_error(req, page, addr, exc)
        found = STATUS_LINE.match(page.data)
        status = int(found.group(1)) if found else 500
        cfg = self.cfg
        text = http_errors.message(status, line=cfg.limit_request_line,
                                   fields=cfg.limit_request_fields, field=cfg.limit_request_field_size)
        answer = http_errors.error_response(http_errors.request_path(target_of(req, exc)), status, text)
        try:
            client.sendall(answer)
        except OSError:
            self.log.debug("Failed to send error message.")


class WrittenPage:
    """Stands in for the client's socket while gunicorn writes its own error
    page, so that its status can be kept and its HTML replaced."""

    def __init__(self):
        self.data = b""

    def gettimeout(self):
        return 0.0  # gunicorn then writes with no fiddling over blocking mode

    def sendall(self, data):
        self.data += data


def target_of(req, exc):
    """The request target, when its request line was read. A request whose headers
    are over the limits fails inside gunicorn's Request constructor, so the
    half-built request is found on the exception's traceback."""
    if req is not None:
        return getattr(req, "uri", None)
    for frame, _ in traceback.walk_tb(exc.__traceback__):
        candidate = frame.f_locals.get("self")
        if isinstance(candidate, Request):
            return candidate.uri
    return None
