#!/usr/bin/python3
"""Writes a seed corpus into a directory: whole, valid conversations in a target's input layout,
so that a short run starts from deep states instead of random bytes.

Usage: seeds.py DIR [codec|h2|h2_client] (default codec).

codec: HTTP/1.1 conversations for fuzz_codec.
Layout (http/fuzz.h): byte 0 picks options; then records [op][len][bytes] with op 0 = request
bytes, 1 = response bytes, 2 = request EOF, 3 = response EOF, 4 = local error (odd len: 504,
even: 408), 5 = draining.

h2: client byte streams for fuzz_h2 (test/fuzz/h2_driver.h): byte 0 = flags (bit 0: the target
prepends a preface, bit 1: small limits, bit 2: goaway halfway, bit 3: no flush), byte 1 = feed
piece size (0: all at once), then the client's bytes, preface included.

h2_client: the app's byte streams for fuzz_h2_client (test/fuzz/h2_client_driver.h), answering
its GET (stream 1) and chunked POST (stream 3): byte 0 = flags (bit 0: the target prepends a
SETTINGS frame, bit 1: small limits, bit 2: cancel the GET halfway, bit 3: eof at the end),
byte 1 = feed piece size, then the server's frames, its SETTINGS included.
"""
import sys
from pathlib import Path

REQ, RESP, REQ_EOF, RESP_EOF, LOCAL, DRAIN = range(6)

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
GET = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"

CONVERSATIONS = {
    "get": [(REQ, GET), (RESP, OK)],
    "post-chunked-100": [
        (REQ, b"POST /u HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n"),
        (RESP, b"HTTP/1.1 100 Continue\r\n\r\n"),
        (REQ, b"5\r\nhello\r\n0\r\nT: 1\r\n\r\n"),
        (RESP, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n")],
    "pipelined-head": [
        (REQ, GET + b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n" + GET),
        (RESP, OK + b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n" + b"HTTP/1.1 204 No Content\r\n\r\n")],
    "upgrade": [
        (REQ, b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nxx"),
        (RESP, b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nyy"),
        (REQ, b"raw"), (REQ_EOF, b"")],
    "upgrade-declined": [
        (REQ, b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n" + GET),
        (RESP, OK + OK)],
    "http10-eof-body": [
        (REQ, b"GET / HTTP/1.0\r\n\r\n"), (RESP, b"HTTP/1.0 200 OK\r\n\r\nbody"), (RESP_EOF, b"")],
    "keep-alive-close": [
        (REQ, GET), (RESP, b"HTTP/1.1 304 Not Modified\r\n\r\n"),
        (REQ, b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"), (RESP, OK)],
    "ambiguous-framing": [
        (REQ, b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")],
    "target-forms": [
        (REQ, b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n"
              b"GET http://a:80/p;x=1/%2F?q=/?%41 HTTP/1.1\r\nHost: a\r\n\r\n"),
        (RESP, OK + OK)],
    "response-timeout": [(REQ, GET), (LOCAL, b"x")],
    "drain": [(REQ, GET), (DRAIN, b""), (RESP, OK), (REQ, GET)],
}


def encode(records, options=0):
    out = bytearray([options])
    for op, data in records:
        for i in range(0, max(len(data), 1), 255):
            part = data[i:i + 255]
            out += bytes([op, len(part)]) + part
    return bytes(out)


# ---- HTTP/2 (hand-encoded frames and HPACK, RFC 9113 and RFC 7541) ----

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 0, 1, 3, 4, 6, 7, 8, 9
END_STREAM, END_HEADERS = 0x1, 0x4


def frame(ftype, flags, stream, payload=b""):
    return len(payload).to_bytes(3, "big") + bytes([ftype, flags]) + stream.to_bytes(4, "big") + payload


def hpack_literal(name, value):
    """A literal field without indexing, literal name, no Huffman (lengths below 127)."""
    return bytes([0, len(name)]) + name + bytes([len(value)]) + value


# :method GET / POST / HEAD(literal), :path /, :scheme https, :authority a (static table).
GET = b"\x82\x84\x87\x41\x01a"
POST = b"\x83\x84\x87\x41\x01a"
HEAD = b"\x02\x04HEAD\x84\x87\x41\x01a"
SETTINGS0 = frame(SETTINGS, 0, 0)

H2_CONVERSATIONS = {
    "get": frame(HEADERS, END_STREAM | END_HEADERS, 1, GET + hpack_literal(b"cookie", b"a=1")
                 + hpack_literal(b"cookie", b"b=2")),
    "post-length": frame(HEADERS, END_HEADERS, 1, POST + hpack_literal(b"content-length", b"5"))
    + frame(DATA, END_STREAM, 1, b"hello"),
    "post-chunked-trailers": frame(HEADERS, END_HEADERS, 1, POST + hpack_literal(b"te", b"trailers"))
    + frame(DATA, 0, 1, b"abc") + frame(HEADERS, END_STREAM | END_HEADERS, 1, hpack_literal(b"x-sum", b"1")),
    "head-and-get": frame(HEADERS, END_STREAM | END_HEADERS, 1, HEAD)
    + frame(HEADERS, END_STREAM | END_HEADERS, 3, GET),
    "continuation": frame(HEADERS, END_STREAM, 1, GET)
    + frame(CONTINUATION, 0, 1, hpack_literal(b"x-a", b"1"))
    + frame(CONTINUATION, END_HEADERS, 1, hpack_literal(b"x-b", b"2")),
    "reset-ping-window": frame(HEADERS, END_HEADERS, 1, POST)
    + frame(RST_STREAM, 0, 1, (8).to_bytes(4, "big")) + frame(PING, 0, 0, b"12345678")
    + frame(WINDOW_UPDATE, 0, 0, (1000).to_bytes(4, "big")) + frame(HEADERS, END_STREAM | END_HEADERS, 3, GET),
    "goaway": frame(HEADERS, END_STREAM | END_HEADERS, 1, GET)
    + frame(GOAWAY, 0, 0, (1).to_bytes(4, "big") + (0).to_bytes(4, "big")),
}

# Responses (static table): :status 200 and 204; :status 100 as a literal with an indexed name.
STATUS200, STATUS204, STATUS100 = b"\x88", b"\x89", b"\x08\x03100"
SETTINGS_ACK = frame(SETTINGS, 0x1, 0)
# SETTINGS_MAX_CONCURRENT_STREAMS = 1, SETTINGS_INITIAL_WINDOW_SIZE = 10.
SETTINGS_TIGHT = frame(SETTINGS, 0, 0, (3).to_bytes(2, "big") + (1).to_bytes(4, "big")
                       + (4).to_bytes(2, "big") + (10).to_bytes(4, "big"))

H2_CLIENT_CONVERSATIONS = {
    "get-length": SETTINGS0 + SETTINGS_ACK
    + frame(HEADERS, END_HEADERS, 1, STATUS200 + hpack_literal(b"content-length", b"2"))
    + frame(DATA, END_STREAM, 1, b"ok"),
    "chunked-trailers": SETTINGS0 + SETTINGS_ACK
    + frame(HEADERS, END_HEADERS, 1, STATUS200 + hpack_literal(b"content-type", b"text/plain"))
    + frame(DATA, 0, 1, b"abc") + frame(DATA, 0, 1, b"de")
    + frame(HEADERS, END_STREAM | END_HEADERS, 1, hpack_literal(b"grpc-status", b"0")),
    "interim-and-both": SETTINGS0 + SETTINGS_ACK
    + frame(HEADERS, END_HEADERS, 3, STATUS100)
    + frame(HEADERS, END_STREAM | END_HEADERS, 1, STATUS204)
    + frame(HEADERS, END_HEADERS, 3, STATUS200) + frame(DATA, END_STREAM, 3, b"done"),
    "continuation": SETTINGS0 + SETTINGS_ACK
    + frame(HEADERS, 0, 1, STATUS200) + frame(CONTINUATION, END_HEADERS, 1, hpack_literal(b"x-a", b"1"))
    + frame(DATA, END_STREAM, 1, b"x"),
    "tight-settings": SETTINGS_TIGHT + SETTINGS_ACK
    + frame(HEADERS, END_HEADERS, 1, STATUS200) + frame(DATA, 0, 1, b"0123456789")
    + frame(WINDOW_UPDATE, 0, 3, (100).to_bytes(4, "big")) + frame(DATA, END_STREAM, 1, b""),
    "reset-ping-goaway": SETTINGS0 + SETTINGS_ACK
    + frame(RST_STREAM, 0, 3, (7).to_bytes(4, "big")) + frame(PING, 0, 0, b"12345678")
    + frame(HEADERS, END_HEADERS, 1, STATUS200)
    + frame(GOAWAY, 0, 0, (1).to_bytes(4, "big") + (0).to_bytes(4, "big"))
    + frame(DATA, END_STREAM, 1, b"bye"),
}


def main():
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    target = sys.argv[2] if len(sys.argv) > 2 else "codec"
    if target == "h2":
        for name, frames in H2_CONVERSATIONS.items():
            for flags, piece in ((0, 0), (2, 7), (4, 0), (8, 0)):
                body = H2_PREFACE + SETTINGS0 + frames
                (out / f"{name}-{flags}-{piece}").write_bytes(bytes([flags, piece]) + body)
        return
    if target == "h2_client":
        for name, frames in H2_CLIENT_CONVERSATIONS.items():
            for flags, piece in ((0, 0), (2, 7), (4, 0), (8, 0)):
                (out / f"{name}-{flags}-{piece}").write_bytes(bytes([flags, piece]) + frames)
        return
    for name, records in CONVERSATIONS.items():
        for options in (0, 4 | 16):  # default limits; small limits with a client certificate
            (out / f"{name}-{options}").write_bytes(encode(records, options))


if __name__ == "__main__":
    main()
