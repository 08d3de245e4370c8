"""Feedback on calls: a score from 0 to 1 and a comment, sent by the caller with
`POST /v1/feedback` for a request row of its own key. One per request row: feedback
sent again replaces it."""

from ..data.collection import Collection
from ..data.fields import Decimal, LongText, Relation

feedback = Collection(
    "feedback",
    Relation("request", "requests", on_delete="keep", unique=True),
    Relation("key", "keys", on_delete="keep"),
    Decimal("score", min=0, max=1, required=True, help="From 0 (bad) to 1 (good)."),
    LongText("comment"),
    label="Feedback",
    singular="feedback",
    list=["created", "request", "key", "score", "comment"],
    search=["comment"],
    filters=["key"],
    readonly=True,
)
