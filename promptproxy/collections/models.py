"""Models offered to clients, each served by one upstream api.

Several models may share one public name: they form a group, and a call to that
name is served by one of them, drawn by weight (see promptproxy/routing.py)."""

from ..data.collection import Collection
from ..data.fields import Bool, Decimal, LongText, Number, Relation, Relations, Text

models = Collection(
    "models",
    Relation("api", "apis", required=True, label="API"),
    Text("model", required=True, help="The upstream's model name, e.g. gpt-4o-mini or llama3:8b."),
    Text("name", index=True,
         help="Optional public name clients may use instead of the id; may contain colons. "
              "Models sharing a name form a group: each call is served by one of them."),
    Number("weight", default=1, min=0, max=1000,
           help="Share of a group's calls this model serves, relative to the others (0: only when the others "
                "fail)."),
    Relations("fallbacks", "models",
              help="Models (and their groups) tried in this order when every member of this model's group "
                   "failed before answering."),
    Decimal("input_price", min=0, label="Input price", group="prices",
            help="Per million input tokens, in the instance's currency (PROMPTPROXY_CURRENCY, USD by default). "
                 "Empty: free (a model of your own)."),
    Decimal("cached_input_price", min=0, label="Cached input price", group="prices",
            help="Per million input tokens read from the upstream's prompt cache. Empty: the input price."),
    Decimal("output_price", min=0, label="Output price", group="prices",
            help="Per million output tokens. Empty: free."),
    Bool("active", default=True),
    LongText("description"),
    title=["name", "model"],
    reference="name",
    list=["name", "id", "model", "api", "weight", "active", "created"],
    search=["name", "model", "description"],
    filters=["api", "active"],
    sort="name",
)
