"""Gateway keys: what a user puts in `Authorization: Bearer ...`. Only a hash is kept."""

from ..collection import Collection
from ..fields import Bool, DateTime, GatewayKey, Relation, Text

keys = Collection(
    "keys",
    Relation("user", "users", required=True),
    Text("label", help="What this key is for, e.g. \"phone\" or \"Open WebUI\"."),
    GatewayKey("key"),
    Bool("active", default=True),
    Bool("track", help="Store full request and response bodies on this key's request rows."),
    DateTime("expires", help="Optional; the key stops working after this time."),
    DateTime("last_used", editable=False),
    title=["label", "key_prefix"],
    list=["label", "user", "key", "active", "track", "expires", "last_used", "created"],
    search=["label", "key_prefix"],
    filters=["user", "active", "track"],
)
