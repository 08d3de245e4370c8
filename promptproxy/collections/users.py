"""The people who call the gateway (not the admins who manage it)."""

from ..data.collection import Collection
from ..data.fields import Bool, Email, LongText, Number, Relations, Text

ALLOW = "Leave empty to allow all."

users = Collection(
    "users",
    Text("name", required=True),
    Email("email", unique=True, help="Optional; unique when given."),
    Bool("active", default=True, help="Inactive users' keys are refused with 403."),
    Relations("apis", "apis", label="Allowed APIs", help="Upstream APIs this user may use. " + ALLOW),
    Relations("models", "models", label="Allowed models", help=ALLOW),
    Relations("prompts", "prompts", label="Allowed prompts", help=ALLOW),
    Bool("require_prompt", label="Require a prompt",
         help="Refuse bare models: every call must name one of the allowed prompts."),
    Number("rpm", min=1, label="Requests per minute", help="Empty: the instance default."),
    Number("tpm", min=1, label="Tokens per minute", help="Empty: the instance default."),
    Number("rpd", min=1, label="Requests per day", help="Empty: the instance default."),
    Number("concurrency", min=1, label="Concurrent requests", help="Empty: the instance default."),
    LongText("notes"),
    title=["name", "email"],
    list=["name", "email", "active", "created"],
    search=["name", "email", "notes"],
    filters=["active"],
    sort="name",
)
