"""PromptProxy's collections, one declaration per file. Order matters only for menus."""

from .apis import apis
from .feedback import feedback
from .keys import keys
from .models import models
from .prompt_versions import prompt_versions
from .prompts import prompts
from .requests import requests
from .users import users

ALL = [users, keys, apis, models, prompts, prompt_versions, requests, feedback]
BY_NAME = {c.name: c for c in ALL}


def dependents(collection):
    """(collection, relation field) pairs that point at `collection`."""
    return [(other, field) for other in ALL for field in other.fields
            if getattr(field, "target", None) == collection.name]
