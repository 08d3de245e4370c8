"""Server-sent events, read incrementally from an upstream, as the WHATWG HTML
standard says to read them (https://html.spec.whatwg.org/multipage/server-sent-events.html).

    parser = Parser()
    for piece in pieces_as_they_arrive:
        for event in parser.feed(piece):
            ... event.name, event.data, event.raw ...
    for event in parser.end():
        ...

Lines end with LF, CR or CRLF, and a read may stop anywhere: inside a line, inside
a UTF-8 character, or between the CR and the LF of one line end. Every upstream
stream the proxy relays goes through here, so the work is done with bytes
methods over whole reads: line ends are normalised to LF once per read, events
are found with `find(b"\\n\\n")`, and a one-line `data:` event (almost every
OpenAI chunk) is taken apart without splitting it into lines.
"""

BOM = b"\xef\xbb\xbf"


class Event:
    """One dispatched event.

    `name` is the `event:` field (None when absent: the standard's "message"),
    `data` the `data:` lines joined with LF, as bytes, `id` the last event id
    seen so far in the stream (None if none), and `raw` the event's lines as
    received, with LF line ends and the blank line that ended it, ready to be
    passed on unchanged. A keep-alive comment (with `Parser(comments=True)`)
    is an Event whose `data` is None.
    """

    __slots__ = ("name", "data", "id", "raw")

    def __init__(self, data, name=None, id=None, raw=None):
        self.data, self.name, self.id = data, name, id
        self.raw = encode(data, name) if raw is None else raw

    def __eq__(self, other):
        return isinstance(other, Event) and (self.name, self.data, self.id, self.raw) == \
            (other.name, other.data, other.id, other.raw)

    def __repr__(self):
        return f"Event(name={self.name!r}, data={self.data!r}, id={self.id!r})"


def encode(data, name=None):
    """One event in the wire format: `event:` (if named), then one `data:` line
    per line of `data` (bytes), then the blank line."""
    head = b"event: " + name.encode() + b"\n" if name else b""
    return head + b"".join(b"data: " + line + b"\n" for line in data.split(b"\n")) + b"\n"


class Parser:
    """Turns the pieces of one event stream into Events, as they arrive.

    `feed(piece)` returns the events completed by that piece; `end()` those
    left when the upstream closes. The standard discards an event that was not
    ended by a blank line; `end()` keeps it when each of its lines is complete
    (the upstream closed right after a line end, e.g. after a final
    `data: [DONE]\\n`), and discards a last line the close cut short, which is
    truncated data, not an event.

    With `comments=True`, a block with no data but with comment lines (a
    keep-alive such as `: ping`) is returned too, as an Event whose `data` is
    None, so a relay can pass it on; the standard dispatches nothing for it.
    """

    def __init__(self, comments=False):
        self.comments = comments
        self.last_id = None   # the standard's "last event ID buffer"
        self.retry = None     # the last valid `retry:` field, in milliseconds
        self._pending = []    # pieces (LF line ends) after the last blank line
        self._start = True    # still at the start of the stream (a BOM may follow)
        self._after_cr = False  # the last piece ended with CR: an LF next is part of it

    def feed(self, piece):
        if not piece:
            return []
        if self._after_cr:
            self._after_cr = False
            if piece[:1] == b"\n":
                piece = piece[1:]
        if self._start:
            head = b"".join(self._pending) + piece
            if len(head) < len(BOM) and BOM.startswith(head):
                self._pending = [head]  # maybe a BOM cut short: wait for more
                return []
            self._pending, self._start = [], False
            piece = head[len(BOM):] if head.startswith(BOM) else head
        if b"\r" in piece:
            self._after_cr = piece[-1:] == b"\r"
            piece = piece.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        pending = self._pending
        if b"\n\n" not in piece and not (pending and piece and piece[0] == 10 and pending[-1][-1] == 10):
            if piece:
                pending.append(piece)  # no event ends here
            return []
        text = b"".join(pending) + piece if pending else piece
        events, start, find = [], 0, text.find
        end = find(b"\n\n")
        while end >= 0:
            if text[start] == 10:  # LF: a blank line right after the last event
                start += 1
            if start < end:
                if text.startswith(b"data: ", start) and find(b"\n", start, end) < 0:
                    # The common case, one `data: ` line: no need to split it into lines.
                    events.append(Event(text[start + 6:end], None, self.last_id, text[start:end + 2]))
                else:
                    event = self._event(text, start, end)
                    if event is not None:
                        events.append(event)
            start = end + 2
            end = find(b"\n\n", start)
        self._pending = [text[start:]] if start < len(text) else []
        return events

    def end(self):
        """The events left when the stream ends (see the class docstring)."""
        self._start = self._after_cr = False
        text = b"".join(self._pending)
        self._pending = []
        cut = text.rfind(b"\n") + 1  # a line without its line end was cut short
        if not text[:cut].strip(b"\n"):
            return []
        return self.feed(text[:cut] + b"\n")

    def _event(self, text, start, end):
        """The Event for the lines text[start:end], or None if it dispatches nothing."""
        raw = text[start:end + 2]
        name, data, comment = None, [], False
        for line in text[start:end].split(b"\n"):
            field, colon, value = line.partition(b":")
            if colon and not field:
                comment = True
                continue
            if value[:1] == b" ":
                value = value[1:]
            if field == b"data":
                data.append(value)
            elif field == b"event":
                name = value.decode("utf-8", "replace")
            elif field == b"id" and b"\0" not in value:
                self.last_id = value.decode("utf-8", "replace")
            elif field == b"retry" and value.isdigit():
                self.retry = int(value)
        if data:
            return Event(b"\n".join(data), name or None, self.last_id, raw)
        if comment and self.comments:
            return Event(None, None, self.last_id, raw)
        return None
