"""The event-stream parser: the WHATWG rules, and the same events however a recorded
stream is cut into reads."""

import json
import random
from pathlib import Path

import pytest

from promptproxy.providers.sse import Event, Parser, encode

FIXTURES = Path(__file__).parent / "fixtures"
STREAMS = sorted(FIXTURES.glob("litellm-1.106.2/*.sse")) + [FIXTURES / "anthropic_messages_stream.sse"]
LINE_ENDS = {"lf": b"\n", "crlf": b"\r\n", "cr": b"\r"}


def parse(pieces, **options):
    parser = Parser(**options)
    events = [event for piece in pieces for event in parser.feed(piece)]
    return events + parser.end()


def summary(events):
    return [(e.name, e.data, e.id) for e in events]


def recorded(path, line_end):
    return path.read_bytes().replace(b"\n", LINE_ENDS[line_end])


@pytest.mark.parametrize("line_end", LINE_ENDS)
@pytest.mark.parametrize("path", STREAMS, ids=lambda p: p.stem)
def test_a_recorded_stream_split_at_every_byte_gives_the_same_events(path, line_end):
    stream = recorded(path, line_end)
    whole = parse([stream])
    assert len(whole) == path.read_bytes().count(b"\n\n")
    assert [e.raw for e in whole] == [block + b"\n\n" for block in path.read_bytes().split(b"\n\n")[:-1]]
    for cut in range(1, len(stream)):
        assert parse([stream[:cut], stream[cut:]]) == whole, cut


@pytest.mark.parametrize("line_end", LINE_ENDS)
@pytest.mark.parametrize("path", STREAMS, ids=lambda p: p.stem)
def test_a_recorded_stream_cut_into_many_random_pieces_gives_the_same_events(path, line_end):
    stream = recorded(path, line_end)
    whole = parse([stream])
    rng = random.Random(f"{path.name}-{line_end}")
    for _ in range(50):
        cuts = sorted(rng.sample(range(1, len(stream)), rng.randint(2, 40)))
        pieces = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)])]
        assert parse(pieces) == whole, cuts
    assert parse([bytes([b]) for b in stream]) == whole  # one byte per read


def test_the_anthropic_stream_keeps_its_names_and_utf8_text():
    events = parse([recorded(FIXTURES / "anthropic_messages_stream.sse", "crlf")])
    assert [e.name for e in events][:3] == ["message_start", "content_block_start", "ping"]
    text = "".join(json.loads(e.data)["delta"]["text"] for e in events if e.name == "content_block_delta")
    assert text == "Hello wörld ✓ — ok"


def test_multi_line_data_is_joined_with_lf():
    assert summary(parse([b"data: YHOO\ndata: +2\r\ndata: 10\r\r"])) == [(None, b"YHOO\n+2\n10", None)]


def test_the_standard_example_with_comments_and_ids():
    stream = b": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\ndata:  third event\n"
    # The last event has no blank line; its line is complete, so end() keeps it.
    assert summary(parse([stream])) == [(None, b"first event", "1"), (None, b"second event", ""),
                                        (None, b" third event", "")]


def test_empty_data_fields_still_dispatch():
    assert summary(parse([b"data\n\ndata\ndata\n\ndata:\n"])) == [(None, b"", None), (None, b"\n", None),
                                                                  (None, b"", None)]


def test_one_leading_space_is_stripped():
    assert [e.data for e in parse([b"data:test\n\ndata: test\n\ndata:  test\n\n"])] == [b"test", b"test", b" test"]


def test_event_names_fields_without_colon_and_unknown_fields():
    events = parse([b"event: ping\nfoo: bar\ndata: {}\n\nevent\ndata: x\n\n"])
    assert summary(events) == [("ping", b"{}", None), (None, b"x", None)]


def test_an_event_without_data_dispatches_nothing():
    assert parse([b"event: message_stop\n\nid: 7\n\n: keep-alive\n\n"]) == []


def test_comments_surface_only_when_asked():
    [event] = parse([b": keep-alive\n\n"], comments=True)
    assert event.data is None and event.raw == b": keep-alive\n\n"


def test_id_persists_ignores_nul_and_retry_takes_digits_only():
    parser = Parser()
    events = parser.feed(b"id: a\nretry: 1500\ndata: 1\n\ndata: 2\n\nid: b\0c\nretry: 2x\ndata: 3\n\n")
    assert [e.id for e in events] == ["a", "a", "a"] and parser.retry == 1500


def test_a_bom_at_the_start_is_dropped_even_when_cut():
    stream = b"\xef\xbb\xbfdata: x\n\n"
    for cut in range(1, 4):
        assert summary(parse([stream[:cut], stream[cut:]])) == [(None, b"x", None)]
    assert parse([b"data: \xef\xbb\xbfx\n\n"])[0].data == b"\xef\xbb\xbfx"  # only at the start


def test_a_cr_then_lf_in_the_next_read_is_one_line_end():
    parser = Parser()
    assert summary(parser.feed(b"data: a\r\n\r")) == [(None, b"a", None)]
    assert summary(parser.feed(b"\ndata: b\r\n\r\n")) == [(None, b"b", None)]


def test_blank_lines_between_events_are_just_blank_lines():
    assert [e.data for e in parse([b"\n\n\ndata: a\n\n\n\n\ndata: b\n\n"])] == [b"a", b"b"]


def test_end_keeps_complete_lines_and_drops_a_line_cut_short():
    assert [e.data for e in parse([b"data: [DONE]\n"])] == [b"[DONE]"]
    assert [e.data for e in parse([b"data: a\n\ndata: {\"cho"])] == [b"a"]
    assert parse([b"event: x\n"]) == []


def test_raw_is_the_event_as_received_with_lf_line_ends():
    [event] = parse([b"event: e\r\n: note\r\ndata: 1\r\n\r\n"])
    assert event.raw == b"event: e\n: note\ndata: 1\n\n"


def test_encode_writes_one_data_line_per_line():
    assert encode(b"a\nb", "n") == b"event: n\ndata: a\ndata: b\n\n"
    assert parse([encode(b"a\nb", "n")]) == [Event(b"a\nb", "n")]
