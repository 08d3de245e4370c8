"""An email address, stored lower-case."""

import re

from .base import Invalid
from .text import Text

EMAIL_PATTERN = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")  # also the admins' logins (auth)


class Email(Text):
    def parse(self, value):
        value = super().parse(value)
        if value and not EMAIL_PATTERN.fullmatch(value):
            raise Invalid("validation_invalid_email", "Must be a valid email address.")
        return value.lower() if value else value
