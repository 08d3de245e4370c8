"""The people who call the gateway (not the admins who manage it)."""

from ..data.collection import Collection
from ..data.fields import Bool, Decimal, Email, LongText, Number, Relations, Select, Text

ALLOW = "Leave empty to allow all."
DEFAULT = "Empty: the instance default."
PERIODS = ["day", "week", "month", "total"]  # budget periods; day, week (from Monday) and month in UTC
PERIOD_HELP = "What the budget is for: each UTC day, week (from Monday) or month, or in total."

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
    Decimal("budget", min=0, group="limits",
            help="Most this user may spend per budget period, in the instance's currency: once spent, calls "
                 "are refused until the period ends. Calls with a key of its own budget count on that key. "
                 "Empty: no budget."),
    Select("budget_period", choices=PERIODS, default="month", label="Budget period",
           help=PERIOD_HELP, group="limits"),
    LongText("notes"),
    title=["name", "email"],
    list=["name", "email", "active", "created"],
    search=["name", "email", "notes"],
    filters=["active"],
    sort="name",
)
