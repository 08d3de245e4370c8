"""Field types, one module each: a collection is a list of these, and its table,
validation and JSON shape are derived from them (the admin's forms and cells
from its own registry, `promptproxy/admin/forms.py`)."""

from .base import (
    INTEGER_RANGE,
    KEEP,
    MAX_NESTING,
    Field,
    Invalid,
    JSONColumn,
    blank,
    format_datetime,
    new_id,
    storable_problem,
    utcnow,
)
from .bool import Bool
from .datetime import DateTime
from .decimal import Decimal
from .email import EMAIL_PATTERN, Email
from .gateway_key import GatewayKey, GeneratedKey
from .json import BUILT_IN_VARIABLES, VARIABLE_NAME, Json, Labels, Variables
from .number import Number
from .relation import Relation, Relations
from .secret import Secret
from .select import Select
from .text import LongText, Text
from .url import Url

__all__ = [
    "INTEGER_RANGE", "KEEP", "MAX_NESTING", "Field", "Invalid", "JSONColumn", "blank", "format_datetime",
    "new_id", "storable_problem", "utcnow",
    "Bool", "DateTime", "Decimal", "EMAIL_PATTERN", "Email", "GatewayKey", "GeneratedKey", "Json", "Labels",
    "Number", "Relation", "Relations", "Secret", "Select", "LongText", "Text", "Url", "Variables",
    "BUILT_IN_VARIABLES", "VARIABLE_NAME",
]
