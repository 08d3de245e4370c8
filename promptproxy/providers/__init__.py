"""How each kind of upstream is spoken to: its request shape, stream events, errors
and authentication (openai.py, anthropic/), the event-stream parser (sse.py) and
the connections to upstreams."""
