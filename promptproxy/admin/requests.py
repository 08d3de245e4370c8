"""The request rows' table: read-only, and each row's page says why its bodies are
empty when they are (the key had Track off, or is gone)."""

from ..collections import BY_NAME
from .views import CollectionView

BODIES = ("request_body", "response_body", "system_prompt", "user_message", "reply")


class RequestView(CollectionView):
    """The request rows, whose details say why a call's bodies are empty."""

    details_template = "promptproxy/request_details.html"

    def bodies_missing(self, row):
        """Why `row` holds no bodies, for its details page: None when it holds one,
        else {"key": the key's row (None when it was deleted), "title": its name, "key_id": its id}.
        Bodies are stored only for keys with Track on (see accounting/calls.py)."""
        if any(getattr(row, name) for name in BODIES):
            return None
        keys = BY_NAME["keys"]
        key = keys.model.get_or_none(keys.model.id == row.key) if row.key else None
        return {"key": key, "title": keys.title(key) if key else None, "key_id": row.key}
