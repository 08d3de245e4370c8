"""A stored prompt as one call uses it: which of its versions serves the call, and
its instructions with the call's variables filled in.

The prompt part of `model:prompt@3` or `model:prompt@staging` is looked up whole
first (a prompt may be named `team@home`), then split at its last `@`: digits
name a version, anything else a label. A call that pins neither is served the
version drawn by weight when some versions have weights (the same one for the
same end user, or key, while the weights stay), else the version labelled
`production`, else the latest. All of it comes from the catalog's snapshot, which
holds each prompt's versions: no query on the way.

Variables: `{{name}}` in the instructions takes the call's `prompt_variables`
value, else the prompt's declared default; one declared `null` is required. The
built-ins `{{user.name}}`, `{{user.email}}`, `{{end_user}}`, `{{date}}` and
`{{datetime}}` (UTC) are the call's own and cannot be given. A `{{name}}` neither
declared, given nor built in is left as it is, so text written before variables
existed reads as it did. Values are put in as text, once: nothing in a value is
read as a placeholder or evaluated.
"""

import hashlib
import json
import re
from typing import NamedTuple

from .data.fields import BUILT_IN_VARIABLES, VARIABLE_NAME
from .data.versions import PRODUCTION
from .errors import ProxyError, shown

PLACEHOLDER = re.compile(r"\{\{\s*(" + VARIABLE_NAME + r")\s*\}\}")
VARIABLES = "prompt_variables"  # the request body's field; never forwarded


class Referenced:
    """A prompt as a call's `model` names it: the prompt row, with the version its
    reference pins (None when it pins none). It answers to the prompt's id, name
    and creation time, as the prompt row does, for access rules and listings."""

    __slots__ = ("prompt", "pinned", "id", "name", "created")

    def __init__(self, prompt, pinned=None):
        self.prompt, self.pinned = prompt, pinned
        self.id, self.name, self.created = prompt.id, prompt.name, prompt.created


def referenced_prompt(snap, ref):
    """The prompt named by the part of `model:prompt` after the colon, with the
    version it pins; a 404 naming what is not there."""
    prompt = snap.prompts.get(ref)
    if prompt is not None and prompt.active:
        return Referenced(prompt)
    name, at, pin = ref.rpartition("@")
    prompt = snap.prompts.get(name) if at and name else None
    if prompt is None or not prompt.active:
        raise ProxyError(404, f"The prompt '{shown(ref)}' does not exist or is not available.",
                         param="model", code="prompt_not_found")
    if pin.isdigit():
        version = prompt.versions.get(int(pin))
        if version is None:
            raise ProxyError(404, f"The prompt '{shown(name)}' has no version {shown(pin, 20)}.",
                             param="model", code="prompt_version_not_found")
    else:
        version = prompt.labels.get(pin)
        if version is None:
            raise ProxyError(404, f"The prompt '{shown(name)}' has no version labelled '{shown(pin, 40)}'.",
                             param="model", code="prompt_label_not_found")
    return Referenced(prompt, version)


# -- which version serves the call ------------------------------------------------------

def chosen_version(referenced, end_user, key_id):
    """The version serving a call: the pinned one; else one drawn by weight for its
    end user (or its key, without one); else `production`; else the latest. None
    only for a prompt that has no versions at all (its own content serves)."""
    if referenced.pinned is not None:
        return referenced.pinned
    prompt = referenced.prompt
    if prompt.weighted:
        subject = f"user:{end_user}" if end_user else f"key:{key_id}"
        return drawn(prompt.weighted, f"{prompt.id}\x1f{subject}")
    return prompt.labels.get(PRODUCTION) or prompt.latest


def drawn(weighted, seed):
    """One of `weighted` (versions with a weight), in proportion to the weights.

    The draw is a hash of the seed and the weights placed on [0, total): the same
    subject gets the same version for as long as the weights stay, and changing
    them deals every subject again."""
    weights = [(version.version, version.weight) for version in weighted]
    digest = hashlib.sha256(f"{seed}\x1f{weights}".encode()).digest()
    point = int.from_bytes(digest[:8], "big") / 2 ** 64 * sum(weight for _, weight in weights)
    for version in weighted:
        point -= version.weight
        if point < 0:
            return version
    return weighted[-1]


# -- what the providers put in front ------------------------------------------------------

class Served(NamedTuple):
    """The stored prompt's version as the providers apply it to one call (see
    providers/openai.py and providers/anthropic/messages.py)."""

    instructions: str
    tools: list | None
    replace_system: bool


def serve(call, body):
    """(What the call's prompt puts in front of it, or None without a prompt; the
    body to forward, which never carries `prompt_variables`). The version chosen
    is noted on the call (`prompt_version`) for its row. A 400 names a required
    variable without a value, or a value that is not text."""
    forwarded = dict(body)
    given = given_variables(forwarded.pop(VARIABLES, None))
    if call.prompt is None:
        return None, forwarded
    end_user = call.end_user  # who the call is for (see accounting/end_users.py)
    version = chosen_version(call.prompt, end_user, call.key.id)
    call.prompt_version = version.version if version else None
    source = version or call.prompt.prompt  # a prompt without versions serves its own content
    instructions = source.instructions or ""
    if "{{" in instructions:
        instructions = filled(instructions, call.prompt.prompt.variables or {}, given, built_ins(call, end_user))
    return Served(instructions, source.tools, bool(source.replace_system)), forwarded


def built_ins(call, end_user):
    """The variables every call has: who makes it, for whom, and when (UTC)."""
    return {"user.name": call.user.name or "", "user.email": call.user.email or "", "end_user": end_user or "",
            "date": call.created.strftime("%Y-%m-%d"), "datetime": call.created.strftime("%Y-%m-%dT%H:%M:%SZ")}



def given_variables(value):
    """`prompt_variables` as {name: text}: an object of text, numbers or booleans."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ProxyError(400, f"'{VARIABLES}' must be an object of variable names and values.", param=VARIABLES)
    given = {}
    for name, given_value in value.items():
        if given_value is None:
            continue
        if isinstance(given_value, (dict, list)):
            raise ProxyError(400, f"The value of the prompt variable '{shown(name, 60)}' must be text or a number.",
                             param=VARIABLES)
        given[name] = given_value if isinstance(given_value, str) else json.dumps(given_value)
    return given


def filled(instructions, declared, given, built_in):
    """The instructions with each `{{name}}` replaced by its value, in one pass."""
    def value(match):
        name = match.group(1)
        if name in BUILT_IN_VARIABLES:
            return built_in[name]
        if name in given:
            return given[name]
        if name not in declared:
            return match.group(0)  # not a variable of this prompt: left as written
        if declared[name] is None:
            raise ProxyError(400, f"The prompt variable '{name}' is required: give it in '{VARIABLES}'.",
                             param=VARIABLES, code="missing_prompt_variable")
        default = declared[name]
        return default if isinstance(default, str) else json.dumps(default)

    return PLACEHOLDER.sub(value, instructions)
