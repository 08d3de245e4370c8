"""Stored system prompts, applied by reference: `model: "<model>:<prompt>"`.

Each save that changes the instructions, tools or system-message handling records
a version (see prompt_versions.py); the prompt itself holds the latest content."""

from ..data.collection import Collection
from ..data.fields import Bool, Json, LongText, Text, Variables

prompts = Collection(
    "prompts",
    Text("name", unique=True,
         help="Optional public name clients may use instead of the id, as in gpt-4o-mini:translator."),
    LongText("instructions", required=True, help="The system prompt put in front of every call."),
    Bool("replace_system", label="Replace client system messages",
         help="Drop the client's own system messages instead of keeping them after these instructions.",
         group="advanced"),
    Json("tools", kind=list, help="Optional OpenAI tools added when a request has none.", group="advanced"),
    Variables("variables", help="The {{variables}} the instructions use, as a JSON object of name -> default "
                                "(null: each call must give it in prompt_variables).", group="advanced"),
    LongText("description"),
    Bool("active", default=True),
    title=["name", "instructions"],
    reference="name",
    list=["name", "id", "instructions", "active", "created"],
    search=["name", "instructions", "description"],
    filters=["active"],
    sort="name",
)
