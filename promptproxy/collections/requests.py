"""One row per authenticated call through the proxy, kept after the records it names are gone."""

from ..data.collection import Collection
from ..data.fields import Bool, Decimal, Json, LongText, Number, Relation, Text

requests = Collection(
    "requests",
    Relation("user", "users", on_delete="keep"),
    Relation("key", "keys", on_delete="keep"),
    Relation("api", "apis", on_delete="keep", label="API"),
    Relation("model", "models", on_delete="keep"),
    Relation("prompt", "prompts", on_delete="keep"),
    Number("prompt_version", label="Prompt version", help="The number of the prompt's version that was served."),
    Text("model_ref", label="Model requested", help="The `model` string the client sent."),
    Text("end_user", index=True, label="End user",
         help="Who the caller said the call is for: OpenAI's `user`, or Open WebUI's user headers."),
    Text("endpoint"),
    Bool("stream"),
    Number("status", index=True),
    LongText("error"),
    Number("input_tokens"),
    Number("output_tokens"),
    Number("total_tokens"),
    Decimal("cost", help="What the call cost, from the prices of the model that answered as they were when it "
                         "ended, in the instance's currency. Empty when the upstream reported no usage."),
    Number("latency_ms", label="Latency (ms)"),
    Number("ttfb_ms", label="First byte (ms)"),
    Json("attempts", kind=list, help="Each try of the call: model, api, status or error, milliseconds."),
    Json("request_body"),
    Json("response_body"),
    LongText("system_prompt"),
    LongText("user_message"),
    LongText("reply"),
    list=["created", "user", "model", "prompt", "end_user", "endpoint", "stream", "status",
          "total_tokens", "cost", "latency_ms"],
    search=["model_ref", "error", "endpoint", "end_user"],
    filters=["user", "key", "model", "prompt", "prompt_version", "api", "end_user", "status", "stream", "created"],
    readonly=True,
)
