#!/usr/bin/python3
"""Writes a seed corpus for fuzz_codec into a directory: whole, valid HTTP/1.1 conversations in the
target's input layout, so that a short run starts from deep states instead of random bytes.

Layout (http/fuzz.h): byte 0 picks options; then records [op][len][bytes] with op 0 = request
bytes, 1 = response bytes, 2 = request EOF, 3 = response EOF, 4 = local error (odd len: 504,
even: 408), 5 = draining.
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


def main():
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    for name, records in CONVERSATIONS.items():
        for options in (0, 4 | 16):  # default limits; small limits with a client certificate
            (out / f"{name}-{options}").write_bytes(encode(records, options))


if __name__ == "__main__":
    main()
