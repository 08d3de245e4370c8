"""Running the app: `python app.py serve`, and the Docker image's gunicorn worker."""

_stopping = []


def begin_stopping():
    """The server has been told to stop: responses that would never end by
    themselves (the admin's live log) finish, so shutdown does not wait for them."""
    _stopping.append(True)


def is_stopping():
    return bool(_stopping)
