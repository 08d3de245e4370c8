"""Models offered to clients, each served by one upstream api."""

from ..data.collection import Collection
from ..data.fields import Bool, LongText, Relation, Text

models = Collection(
    "models",
    Relation("api", "apis", required=True, label="API"),
    Text("model", required=True, help="The upstream's model name, e.g. gpt-4o-mini or llama3:8b."),
    Text("name", unique=True,
         help="Optional public name clients may use instead of the id; may contain colons."),
    Bool("active", default=True),
    LongText("description"),
    title=["name", "model"],
    reference="name",
    list=["name", "id", "model", "api", "active", "created"],
    search=["name", "model", "description"],
    filters=["api", "active"],
    sort="name",
)
