"""The people who call the gateway (not the admins who manage it)."""

from ..collection import Collection
from ..fields import Bool, Email, LongText, Text

users = Collection(
    "users",
    Text("name", required=True),
    Email("email", unique=True, help="Optional; unique when given."),
    Bool("active", default=True, help="Inactive users' keys are refused with 403."),
    LongText("notes"),
    title=["name", "email"],
    list=["name", "email", "active", "created"],
    search=["name", "email", "notes"],
    filters=["active"],
    sort="name",
)
