"""Tool definitions and the choice of tool, translated both ways: OpenAI's
`{"type": "function", "function": {...}}` tools and Anthropic's custom tools with
an `input_schema`."""

from .errors import TranslationError


def tools_to_anthropic(tools):
    if not isinstance(tools, list):
        raise TranslationError("'tools' must be an array.")
    result = []
    for i, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict) or tool.get("type") != "function" \
                or not function.get("name"):
            raise TranslationError(f"tools[{i}] must be a function tool with a name.")
        converted = {"name": function["name"]}
        if function.get("description"):
            converted["description"] = function["description"]
        converted["input_schema"] = function.get("parameters") or {"type": "object",
                                                                   "properties": {}}
        result.append(converted)
    return result


def tool_choice_to_anthropic(choice):
    if choice is None:
        return None
    simple = {"auto": "auto", "required": "any", "none": "none"}
    if isinstance(choice, str) and choice in simple:
        return {"type": simple[choice]}
    if isinstance(choice, dict) and choice.get("type") == "function" \
            and isinstance(choice.get("function"), dict) and choice["function"].get("name"):
        return {"type": "tool", "name": choice["function"]["name"]}
    raise TranslationError("'tool_choice' must be \"auto\", \"required\", \"none\" or "
                           "{\"type\": \"function\", \"function\": {\"name\": ...}}.")


def tools_to_openai(tools):
    if not isinstance(tools, list):
        raise TranslationError("tools: must be an array.")
    result = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or tool.get("type") not in (None, "custom") \
                or not tool.get("name"):
            kind = tool.get("type") if isinstance(tool, dict) else None
            raise TranslationError(f"tools.{i}: only custom tools with a name are supported "
                                   f"for this model (got type {kind!r}).")
        function = {"name": tool["name"]}
        if tool.get("description"):
            function["description"] = tool["description"]
        function["parameters"] = tool.get("input_schema") or {"type": "object", "properties": {}}
        result.append({"type": "function", "function": function})
    return result


def tool_choice_to_openai(choice):
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind in ("auto", "none"):
        return kind
    if kind == "any":
        return "required"
    if kind == "tool" and choice.get("name"):
        return {"type": "function", "function": {"name": choice["name"]}}
    raise TranslationError("tool_choice: must be auto, any, none or a named tool.")
