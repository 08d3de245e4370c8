"""The people who call the gateway (not the admins who manage it)."""

from ..data.collection import Collection
from ..data.fields import Bool, Email, LongText, Number, Relations, Text

ALLOW = "Leave empty to allow all."
DEFAULT = "Empty: the instance default."

users = Collection(
    "users",
    Text("name", required=True),
    Email("email", unique=True, help="Optional; unique when given."),
    Bool("active", default=True, help="Inactive users' keys are refused with 403."),
    Relations("apis", "apis", label="Allowed APIs", help="Upstream APIs this user may use. " + ALLOW,
              group="access"),
    Relations("models", "models", label="Allowed models", help=ALLOW, group="access"),
    Relations("prompts", "prompts", label="Allowed prompts", help=ALLOW, group="access"),
    Bool("require_prompt", label="Require a prompt",
         help="Refuse bare models: every call must name one of the allowed prompts.", group="access"),
    Number("rpm", min=1, label="Requests per minute", help=DEFAULT, group="limits"),
    Number("tpm", min=1, label="Tokens per minute", help=DEFAULT, group="limits"),
    Number("rpd", min=1, label="Requests per day", help=DEFAULT, group="limits"),
    Number("concurrency", min=1, label="Concurrent requests", help=DEFAULT, group="limits"),
    LongText("notes"),
    title=["name", "email"],
    list=["name", "email", "active", "created"],
    search=["name", "email", "notes"],
    filters=["active"],
    sort="name",
)
