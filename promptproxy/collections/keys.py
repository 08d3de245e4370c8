"""Gateway keys: what a user puts in `Authorization: Bearer ...`. Only a hash is kept."""

from ..data.collection import Collection
from ..data.fields import Bool, DateTime, Decimal, GatewayKey, Number, Relation, Relations, Select, Text
from .users import PERIOD_HELP, PERIODS

NARROW = "Empty: whatever the user may use. Otherwise only these (and only if the user may too)."
OVERRIDE = "Empty: the user's limit. Set, this key gets its own counter with this limit."
OWN_BUDGET = ("Empty: calls with this key count against the user's budget. Set, this key gets its own budget "
              "instead, and its spend counts on its own.")

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
    Decimal("budget", min=0, help=OWN_BUDGET, group="limits"),
    Select("budget_period", choices=PERIODS, default="month", label="Budget period",
           help=PERIOD_HELP, group="limits"),
    title=["label", "key_prefix"],
    list=["label", "user", "key", "active", "track", "expires", "last_used", "created"],
    search=["label", "key_prefix"],
    filters=["user", "active", "track"],
)
