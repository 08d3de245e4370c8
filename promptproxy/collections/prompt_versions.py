"""Versions of a prompt: what each save that changed its content made of it, kept.

PromptProxy records them (see data/records.py); nobody changes one afterwards but
for its labels and weight. A call to `model:prompt` serves the version labelled
`production`, or else the latest; `model:prompt@3` and `model:prompt@staging` pin
one; weights split the calls that pin none (see promptproxy/prompting.py)."""

from ..data.collection import Collection
from ..data.fields import Bool, Json, Labels, LongText, Number, Relation, Text

prompt_versions = Collection(
    "prompt_versions",
    Relation("prompt", "prompts", on_delete="cascade", editable=False),
    Number("version", editable=False, help="1, 2, 3…: `model:prompt@3` serves version 3."),
    LongText("instructions", editable=False),
    Json("tools", kind=list, editable=False),
    Bool("replace_system", label="Replace client system messages", editable=False),
    LongText("note", editable=False, help="What the save changed, as its author said."),
    Text("saved_by", label="Saved by", editable=False,
         help="The admin who saved it; empty when it was saved from the command line or a migration."),
    Labels("labels", help="Words such as production or staging; a label is on one version of a prompt at most. "
                          "`model:prompt` serves the version labelled production (the latest when none is), "
                          "`model:prompt@staging` the one labelled staging."),
    Number("weight", min=0, max=1000,
           help="When versions of a prompt have weights, calls that name no version or label are split between "
                "them by weight, each end user (or key) staying on one version while the weights stay."),
    Json("promoted", kind=dict, editable=False,
         help="When each label was last moved onto this version (for rolling back)."),
    label="Prompt versions",
    singular="prompt version",
    title="version",
    list=["prompt", "version", "labels", "weight", "note", "saved_by", "created"],
    search=["instructions", "note", "saved_by"],
    filters=["prompt"],
    recorded=True,
)
