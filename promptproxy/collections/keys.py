"""Gateway keys: what a user puts in `Authorization: Bearer ...`. Only a hash is kept."""

from ..data.collection import Collection
from ..data.fields import Bool, DateTime, GatewayKey, Number, Relation, Relations, Text

NARROW = "Empty: whatever the user may use. Otherwise only these (and only if the user may too)."
OVERRIDE = "Empty: the user's limit. Set, this key gets its own counter with this limit."

keys = Collection(
    "keys",
    Relation("user", "users", required=True),
    Text("label", help="What this key is for, e.g. \"phone\" or \"Open WebUI\"."),
    GatewayKey("key"),
    Bool("active", default=True),
    Bool("track", help="Store full request and response bodies on this key's request rows."),
    DateTime("expires", help="Optional; the key stops working after this time."),
    DateTime("last_used", editable=False),
    Relations("apis", "apis", label="Allowed APIs", help=NARROW, group="access"),
    Relations("models", "models", label="Allowed models", help=NARROW, group="access"),
    Relations("prompts", "prompts", label="Allowed prompts", help=NARROW, group="access"),
    Number("rpm", min=1, label="Requests per minute", help=OVERRIDE, group="limits"),
    Number("tpm", min=1, label="Tokens per minute", help=OVERRIDE, group="limits"),
    Number("rpd", min=1, label="Requests per day", help=OVERRIDE, group="limits"),
    Number("concurrency", min=1, label="Concurrent requests", help=OVERRIDE, group="limits"),
    title=["label", "key_prefix"],
    list=["label", "user", "key", "active", "track", "expires", "last_used", "created"],
    search=["label", "key_prefix"],
    filters=["user", "active", "track"],
)
