#!/usr/bin/env python3
"""Writes the small seed corpora under fuzz/corpus/<target>/ (committed; re-run to refresh).

Seeds are recorded OPS/1 traffic in the shapes each target reads: frames for the frame
decoder and the session driver, JSON for the strict parser, auth frames for the verifier,
paths for the path functions, config files for the loader. The path seeds also take every
line of the Big List of Naughty Strings when the public corpora sit beside the checkout
(../shared/corpora/blns/blns.txt); without them those seeds are left as they are.
"""
import json
import os
import struct
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def frame(obj, payload=b""):
    body = obj if isinstance(obj, bytes) else json.dumps(obj, separators=(",", ":")).encode()
    return struct.pack(">I", len(body)) + body + payload


def req(i, op, args=None, payload=b""):
    h = {"id": i, "operate": op}
    if args is not None:
        h["args"] = args
    if payload:
        h["payload"] = len(payload)
    return frame(h, payload)


AUTH = {"type": "auth", "mechanism": "hmac-sha256", "user": "alice", "cnonce": "ab" * 32,
        "proof": "cd" * 32}

SESSIONS = {
    "describe": req(1, "describe"),
    "upload_download": req(1, "upload", {"path": "a/b.txt", "overwrite": True}, b"hello")
    + req(2, "download", {"path": "a/b.txt", "offset": 1, "length": 3})
    + req(3, "list", {"path": "a", "recursive": True}),
    "pipelined_errors": req(1, "nope") + frame(b"{}") + req(3, "describe")
    + frame({"id": 4, "operate": "upload", "args": {"path": "../x"}, "payload": 3}, b"xyz"),
    "sha256": req(1, "upload", {"path": "s", "sha256": "00" * 32}, b"data"),
    "bad_len": b"\x00\x00\x00\x01{" + req(2, "describe"),
    "second_auth": frame(AUTH) + req(2, "describe"),
    "user_field": frame({"id": 1, "operate": "list", "user": "bob"}),
    "register": req(1, "register", {"user": "newuser"}),
    "deep": frame(b'{"id":1,"operate":"list","args":' + b"[" * 40 + b"]" * 40 + b"}"),
}

JSONS = {
    "object": b'{"a":1,"b":[true,false,null],"c":{"d":"e\\u00e9"},"f":-1.5e3}',
    "dup": b'{"a":1,"a":2}',
    "surrogate": b'{"p":"\\ud83d\\ude00","q":"\\ud800"}',
    "numbers": b"[0,-0,1e400,9007199254740993,18446744073709551616,1.0]",
    "bom": b'\xef\xbb\xbf{"a":1}',
    "trailing": b'{"a":1} {}',
    "utf8": '{"caf\u00e9":"\u202e"}'.encode(),
    "config": b'{\n  "plugin_dir": "plugins",\n  "operations": {"upload": {"allow": ["*"]}}\n}',
}

PATHS = [b"\x00file", b"\x00dir/f", b"\x01dir/sub", b"\x02dir/sub", b"\x03dir/f",
         b"\x00out/secret", b"\x00dir/up", b"\x00in/f", b"\x01etc", b"\x00../x",
         b"\x00a//b", b"\x00./a", "\x00caf\u00e9".encode(), b"\x03new/leaf",
         b"\x00" + b"p" * 255 + b"/q", b"\x00dir/f\x01",
         # The changing cases (fuzz_paths.cpp): 4 mkdir with parents, 5 move ("from\0to"),
         # 6 recursive remove, 7 parents made and taken back.
         b"\x04new/a/b", b"\x04file/x", b"\x04out/x", b"\x04in/x/y",
         b"\x05dir\x00moved/dir", b"\x05file\x00out/stolen", b"\x05dir/f\x00in/g",
         b"\x05dir\x00dir/sub/below", b"\x05out\x00x",
         b"\x06dir", b"\x06in", b"\x06out", b"\x06dir/up", b"\x06file",
         b"\x07new/a/b/c", b"\x07dir/sub/new", b"\x07in/new"]

BLNS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "corpora",
                    "blns", "blns.txt")


def naughty_path_seeds():
    """One seed per naughty string, the selector cycling through every case; a move takes
    the string as its destination (its source is an existing file)."""
    if not os.path.exists(BLNS):
        return []
    with open(BLNS, "rb") as f:
        lines = [l for l in f.read().split(b"\n") if l and not l.startswith(b"#")]
    seeds = []
    for i, line in enumerate(lines):
        selector = i % 8
        body = b"dir/f\x00" + line if selector == 5 else line
        seeds.append(bytes([selector]) + body)
    return seeds

SERVER_JSON = b"""{
  "listen": "127.0.0.1:0",
  "io_threads": 2,
  "worker_threads": 8,
  "max_worker_threads": 64,
  "max_frame": 1048576,
  "max_auth_frame": 4096,
  "max_unauthenticated": 256,
  "discard_limit": 67108864,
  "handshake_timeout_ms": 10000,
  "idle_timeout_ms": 300000,
  "payload_timeout_ms": 60000,
  "payload_min_rate": 1024,
  "payload_rate_grace_ms": 120000,
  "operation_timeout_ms": 300000,
  "log_level": "info"
}"""
OPS_JSON = b"""{
  "plugin_dir": "plugins",
  "operations": {
    "upload": {"allow": ["*"], "max_payload": 1000000, "timeout_ms": 5000},
    "download": {"allow": ["alice", "bob"]},
    "list": {"allow": ["*"], "settings": {"max_list_entries": 10}},
    "register": {"allow": ["admin"]}
  }
}"""


def write(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def main():
    for name, data in SESSIONS.items():
        write("fuzz_frames", name, data)
        write("fuzz_session", name, b"\x00\x3f" + data)     # authenticated, 64-byte chunks
        write("fuzz_session", name + "_1b", b"\x00\x00" + data)  # one byte at a time
    write("fuzz_session", "preauth", b"\x01\x07" + frame(AUTH))
    write("fuzz_session", "preauth_describe", b"\x01\xff" + req(1, "describe"))
    for name, data in JSONS.items():
        write("fuzz_strict_json", name, data)
    write("fuzz_auth", "valid", b"\x01")
    write("fuzz_auth", "flip", b"\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01")
    write("fuzz_auth", "frame", b"\x00" + json.dumps(AUTH).encode())
    write("fuzz_auth", "extra", b"\x00" + json.dumps(dict(AUTH, extra=[1, {"x": None}])).encode())
    write("fuzz_auth", "valid_plus", b"\x03")
    write("fuzz_auth", "flip_plus", b"\x03\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01")
    write("fuzz_auth", "frame_plus",
          b"\x02" + json.dumps(dict(AUTH, mechanism="hmac-sha256-plus")).encode())
    sig = b"\r\n\r\n\x00\r\nQUIT\n"
    write("fuzz_proxy_v2", "tcp4", b"\x01")
    write("fuzz_proxy_v2", "tcp6", b"\x00" + sig + b"\x21\x21\x00\x24" + bytes(range(36)))
    write("fuzz_proxy_v2", "local", b"\x00" + sig + b"\x20\x00\x00\x00")
    write("fuzz_proxy_v2", "tlv", b"\x00" + sig + b"\x21\x11\x00\x11" + bytes([192, 0, 2, 7]) +
          bytes([198, 51, 100, 1, 0xC8, 0x22, 0x01, 0xBB]) + b"\x01\x00\x02h2")
    for i, p in enumerate(PATHS):
        write("fuzz_paths", "p%02d" % i, p)
    for i, p in enumerate(naughty_path_seeds()):
        write("fuzz_paths", "blns%03d" % i, p)
    write("fuzz_config", "server", b"\x01" + SERVER_JSON)
    write("fuzz_config", "ops", b"\x00" + OPS_JSON)
    write("fuzz_config", "ops_bad", b"\x00" + OPS_JSON.replace(b'["admin"]', b'"admin"'))
    return 0


if __name__ == "__main__":
    sys.exit(main())
