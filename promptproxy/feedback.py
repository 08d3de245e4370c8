"""`POST /v1/feedback`: a caller's score and comment on one of its own calls.

Every answer to a call carries `x-promptproxy-request-id`, the id of its request
row. With the same gateway key, the caller sends `{"request_id", "score" (0 to 1),
"comment"}`; it is stored in the feedback collection, one per call (sent again, it
replaces the first), and the admin compares prompt versions by it. Rows are written
in batches, so the row may not be in the database yet when feedback arrives: the
recorder's `find` makes sure it is, or waits briefly for another worker's batch.
"""

import datetime as dt
import re

from flask import Blueprint, jsonify

from .data import records
from .errors import ProxyError, shown
from .proxy import active_caller, catalog, json_body, looked_up
from .services import services

feedback_api = Blueprint("feedback_api", __name__, url_prefix="/v1")

RECORD_ID = re.compile(r"[a-z0-9]{15}")


@feedback_api.post("/feedback")
def give_feedback():
    """A caller's score (0 to 1) and comment on one of its own calls, named by the
    `x-promptproxy-request-id` its answer carried; sent again, it replaces the first."""
    try:
        (key, _user), _snap = looked_up(active_caller, catalog().current())
        request_id, score, comment = feedback_fields(json_body())
        row = services().recorder.find(request_id) if RECORD_ID.fullmatch(request_id) else None
        if row is None or row.key != key.id:  # another key's call is as unknown as no call
            raise ProxyError(404, f"No call of this key has the request id '{shown(request_id, 40)}'.",
                             param="request_id", code="request_not_found")
        saved = records.save_feedback(row.id, key.id, score, comment)
    except ProxyError as refused:
        return refused.response()
    except records.RecordInvalid as invalid:
        name, problem = next(iter(invalid.errors.items()))
        return ProxyError(400, f"'{name}': {problem.message}", param=name).response()
    return jsonify(object="feedback", id=saved.id, request_id=saved.request, score=saved.score,
                   comment=saved.comment, created=int(saved.created.replace(tzinfo=dt.UTC).timestamp()))


def feedback_fields(body):
    """(request_id, score, comment) of a feedback body, or a 400 saying what is wrong."""
    request_id, score, comment = body.get("request_id"), body.get("score"), body.get("comment")
    if not isinstance(request_id, str) or not request_id:
        raise ProxyError(400, "'request_id' must be the x-promptproxy-request-id of a call.", param="request_id")
    if isinstance(score, bool) or not isinstance(score, (int, float)) or not 0 <= score <= 1:
        raise ProxyError(400, "'score' must be a number from 0 to 1.", param="score")
    if comment is not None and not isinstance(comment, str):
        raise ProxyError(400, "'comment' must be text.", param="comment")
    return request_id, score, comment
