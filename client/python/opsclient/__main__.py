"""``python3 -m opsclient``: the main opclient verbs in Python.

Reads the connection from the same flags and environment as opclient (OPS_SERVER,
OPS_USER, OPS_KEY_FILE, else OPS_KEY) and exits with the same statuses (docs/CLIENT.md):
0 success, 1 local file, 2 usage, 3 cannot connect, 4 login refused, 5 connection lost
or not OPS/1, 10 + the OPS/1 code for an error the server answered.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .client import Client
from .errors import (AuthFailed, CannotConnect, ConnectionLost, OpsError, ServerProofError)

# OPS/1 error codes in the order of their numbers (1 = bad_frame ... 15 = internal).
_CODES = ["bad_frame", "bad_request", "auth_failed", "unknown_operation", "forbidden",
          "invalid_args", "not_found", "already_exists", "conflict", "payload_too_large",
          "checksum_mismatch", "quota_exceeded", "timeout", "unavailable", "internal"]

EXIT_OK, EXIT_LOCAL, EXIT_USAGE, EXIT_CONNECT, EXIT_AUTH, EXIT_CONNECTION = 0, 1, 2, 3, 4, 5
EXIT_SERVER_BASE = 10


class UsageError(Exception):
    """Bad flags or arguments, no user, no key: exit status 2."""


def exit_status(error: OpsError) -> int:
    """The opclient exit status for an exception of the client."""
    if isinstance(error, (AuthFailed, ServerProofError)):
        return EXIT_AUTH
    if isinstance(error, CannotConnect):
        return EXIT_CONNECT
    if isinstance(error, ConnectionLost):
        return EXIT_CONNECTION
    if error.code in _CODES:
        return EXIT_SERVER_BASE + _CODES.index(error.code) + 1
    return EXIT_CONNECTION


def parse_server(text: str) -> Tuple[str, int, bool]:
    """``HOST:PORT``, ``[v6]:PORT`` or ``HOST`` (port 9000), with an optional ``tls://``
    or ``tcp://`` in front; returns (host, port, tls)."""
    tls = False
    if text.startswith("tls://"):
        tls, text = True, text[6:]
    elif text.startswith("tcp://"):
        text = text[6:]
    host, port = text, "9000"
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise UsageError(f"bad server address {text!r}")
        host, rest = text[1:end], text[end + 1:]
        if rest:
            if not rest.startswith(":"):
                raise UsageError(f"bad server address {text!r}")
            port = rest[1:]
    elif text.count(":") == 1:
        host, port = text.split(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"bad server address {text!r}: use HOST:PORT")
    return host, int(port), tls


def read_key(args: argparse.Namespace) -> str:
    if args.key_file:
        try:
            with open(args.key_file, encoding="utf-8") as f:
                key = f.read().strip()
        except OSError as e:
            raise UsageError(f"cannot read key file {args.key_file}: {e.strerror or e}") from e
        if not key or "\n" in key:
            raise UsageError(f"key file {args.key_file} must hold the key on one line")
        return key
    key = os.environ.get("OPS_KEY", "").strip()
    if not key:
        raise UsageError("no key: use --key-file, OPS_KEY_FILE or OPS_KEY")
    return key


def connect(args: argparse.Namespace) -> Client:
    host, port, tls = parse_server(args.server)
    if not args.user:
        raise UsageError("no user: use --user or OPS_USER")
    key = read_key(args)
    tls = tls or args.tls
    if args.ca and not tls:
        raise UsageError("--ca needs --tls (or tls://)")
    return Client(host, port, args.user, key, timeout=args.timeout, tls=tls, ca=args.ca)


def remote(path: str) -> str:
    """A remote path as ls prints it: trailing '/' dropped, but "/" stays."""
    while len(path) > 1 and path.endswith("/"):
        path = path[:-1]
    return path


def print_json(value: Any) -> None:
    print(json.dumps(value, ensure_ascii=False, separators=(",", ":")))


def note(args: argparse.Namespace, text: str) -> None:
    if not args.quiet:
        print(f"opsclient: {text}", file=sys.stderr)


def human_size(size: int) -> str:
    """As opclient ls -h: below 1 KiB as is, else K, M, G, T with one decimal."""
    if size < 1024:
        return str(size)
    value = size / 1024.0
    for unit in "KMGTP":
        if round(value, 1) < 1024.0 or unit == "P":
            return f"{value:.1f}{unit}"
        value /= 1024.0
    return str(size)  # not reached


# --- the verbs: each takes the connected client and the parsed args ---

def cmd_describe(c: Client, args: argparse.Namespace) -> int:
    operations = c.describe()
    if args.json:
        print_json({"operations": operations})
        return EXIT_OK
    for op in operations:
        if not args.operation or op.get("name") == args.operation:
            print(f"{op.get('name', '')}  {op.get('summary', op.get('description', ''))}".rstrip())
    return EXIT_OK


def cmd_ls(c: Client, args: argparse.Namespace) -> int:
    path = remote(args.path)
    if path == "/":
        path = ""
    entries: List[Dict[str, Any]] = list(c.list_all(path, args.recursive))
    if args.json:
        print_json({"path": path, "entries": entries, "truncated": False})
        return EXIT_OK
    rows = []
    for e in entries:
        is_dir = e.get("type") == "dir"
        size = "-" if is_dir else (human_size(e.get("size", 0)) if args.human
                                   else str(e.get("size", 0)))
        mtime = e.get("mtime")
        when = (datetime.datetime.fromtimestamp(mtime).strftime("%Y-%m-%d %H:%M")
                if isinstance(mtime, int) else "")
        rows.append((size, when, e.get("name", "") + ("/" if is_dir else "")))
    width = max((len(r[0]) for r in rows), default=0)
    for size, when, name in rows:
        print(f"{size.rjust(width)}  {when}  {name}")
    return EXIT_OK


def cmd_upload(c: Client, args: argparse.Namespace) -> int:
    target = args.remote or ""
    if not target or target.endswith("/"):
        if args.local == "-":
            raise UsageError("uploading stdin needs a REMOTE name")
        target += os.path.basename(args.local)
    if args.local == "-":
        data = sys.stdin.buffer.read()
        print_json(dict(c.upload(target, data, overwrite=args.overwrite)))
        return EXIT_OK
    with open(args.local, "rb") as f:
        print_json(dict(c.upload(target, f, overwrite=args.overwrite)))
    return EXIT_OK


def cmd_download(c: Client, args: argparse.Namespace) -> int:
    path = remote(args.remote)
    name = path.rsplit("/", 1)[-1]
    local = args.local or name
    if args.local == "-":
        c.download(path, sys.stdout.buffer)
        sys.stdout.buffer.flush()
        return EXIT_OK
    if os.path.isdir(local):
        local = os.path.join(local, name)
    partial = local + ".part"
    try:
        with open(partial, "wb") as out:
            result = c.download(path, out)
            out.flush()
            os.fsync(out.fileno())
    except OpsError:
        if os.path.exists(partial) and os.path.getsize(partial) == 0:
            os.unlink(partial)  # refused before any byte: nothing to keep
        else:
            note(args, f"partial download kept in {partial}")
        raise
    os.replace(partial, local)
    print_json(dict(result))
    return EXIT_OK


def cmd_rm(c: Client, args: argparse.Namespace) -> int:
    print_json(dict(c.remove(remote(args.path), recursive=args.recursive)))
    return EXIT_OK


def cmd_mv(c: Client, args: argparse.Namespace) -> int:
    print_json(dict(c.move(remote(args.src), remote(args.dst), overwrite=args.overwrite)))
    return EXIT_OK


def cmd_mkdir(c: Client, args: argparse.Namespace) -> int:
    print_json(dict(c.mkdir(remote(args.path), parents=args.parents)))
    return EXIT_OK


def cmd_stat(c: Client, args: argparse.Namespace) -> int:
    path = remote(args.path)
    print_json(dict(c.stat("" if path == "/" else path, sha256=args.sha256)))
    return EXIT_OK


def cmd_usage(c: Client, args: argparse.Namespace) -> int:
    print_json(dict(c.usage()))
    return EXIT_OK


class _Parser(argparse.ArgumentParser):
    """Usage errors exit with status 2 and opclient's prefix."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"opsclient: usage: {message}", file=sys.stderr)
        sys.exit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    def connection_options(in_verb: bool) -> argparse.ArgumentParser:
        """The connection options, accepted before and after the verb. After it, they
        default to "not given" so that they do not undo the same option given before."""
        env = os.environ

        def default(value: Any) -> Any:
            return argparse.SUPPRESS if in_verb else value

        common = argparse.ArgumentParser(add_help=False)
        group = common.add_argument_group("connection")
        group.add_argument("-s", "--server", default=default(env.get("OPS_SERVER", "127.0.0.1:9000")),
                           help="HOST:PORT, [IPv6]:PORT or tls://HOST:PORT (OPS_SERVER)")
        group.add_argument("-u", "--user", default=default(env.get("OPS_USER", "")),
                           help="user name (OPS_USER)")
        group.add_argument("-k", "--key-file", default=default(env.get("OPS_KEY_FILE", "")),
                           help="file holding the key (OPS_KEY_FILE; else OPS_KEY)")
        group.add_argument("--timeout", type=float, default=default(60.0),
                           help="seconds (default 60)")
        group.add_argument("--tls", action="store_true", default=default(False),
                           help="connect over TLS")
        group.add_argument("--ca", default=default(None), help="PEM file of CAs (with --tls)")
        group.add_argument("-q", "--quiet", action="store_true", default=default(False),
                           help="no notes on stderr")
        return common

    common = connection_options(False)
    in_verb = connection_options(True)

    parser = _Parser(prog="python3 -m opsclient", parents=[common],
                     description="Call operations on an opserver (OPS/1); like opclient.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    def verb(name: str, text: str, func: Any) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=text, description=text, parents=[in_verb])
        p.set_defaults(func=func)
        return p

    p = verb("describe", "list the operations you may call", cmd_describe)
    p.add_argument("operation", nargs="?", default="")
    p.add_argument("--json", action="store_true")
    p = verb("ls", "list a remote directory", cmd_ls)
    p.add_argument("path", nargs="?", default="")
    p.add_argument("-R", "--recursive", action="store_true")
    p.add_argument("--json", action="store_true")
    p.add_argument("-H", "--human-readable", dest="human", action="store_true",
                   help="sizes in K, M, G")
    p = verb("upload", "upload a file (- = stdin)", cmd_upload)
    p.add_argument("local")
    p.add_argument("remote", nargs="?", default="")
    p.add_argument("--overwrite", action="store_true")
    p = verb("download", "download a file (LOCAL - = stdout)", cmd_download)
    p.add_argument("remote")
    p.add_argument("local", nargs="?", default="")
    p.add_argument("-f", "--force", action="store_true", help="replace an existing LOCAL")
    p = verb("rm", "remove a file or directory", cmd_rm)
    p.add_argument("path")
    p.add_argument("-r", "-R", "--recursive", action="store_true")
    p = verb("mv", "move or rename", cmd_mv)
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--overwrite", action="store_true")
    p = verb("mkdir", "create a remote directory", cmd_mkdir)
    p.add_argument("path")
    p.add_argument("--no-parents", dest="parents", action="store_false")
    p = verb("stat", "show one remote file or directory", cmd_stat)
    p.add_argument("path", nargs="?", default="")
    p.add_argument("--sha256", action="store_true")
    verb("usage", "your stored bytes and files and your quotas", cmd_usage)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "download" and args.local != "-" and not args.force:
            name = remote(args.remote).rsplit("/", 1)[-1]
            local = args.local or name
            if os.path.isdir(local):
                local = os.path.join(local, name)
            if os.path.lexists(local):
                print(f"opsclient: already_exists: the local file {local} exists; use --force "
                      "to replace it", file=sys.stderr)
                return EXIT_SERVER_BASE + _CODES.index("already_exists") + 1
        with connect(args) as client:
            return int(args.func(client, args))
    except UsageError as e:
        print(f"opsclient: usage: {e}", file=sys.stderr)
        return EXIT_USAGE
    except OpsError as e:
        print(f"opsclient: {e}", file=sys.stderr)
        return exit_status(e)
    except OSError as e:
        print(f"opsclient: local_error: {e}", file=sys.stderr)
        return EXIT_LOCAL


if __name__ == "__main__":
    sys.exit(main())
