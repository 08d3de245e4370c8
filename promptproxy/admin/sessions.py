"""The admin's cookie session, and no session anywhere else."""

from flask.sessions import SecureCookieSessionInterface


class AdminOnlySessions(SecureCookieSessionInterface):
    """Only the admin pages have a cookie session. The proxy and the REST API are
    authenticated by key or token on every call, and skipping the session there
    saves its cookie signing work on the hot path."""

    def open_session(self, app, request):
        if request.path.startswith(("/v1/", "/api/")):
            return None  # Flask substitutes a read-only null session
        return super().open_session(app, request)
