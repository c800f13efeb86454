#!/usr/bin/python3
"""wordcount: an exec operation in Python, written with sdk/python/opserver_plugin.py.

Counts the bytes, lines and words (like `wc`: runs of bytes that are not ASCII whitespace)
of the request payload, streaming it in chunks so that memory stays bounded whatever its
size. With the optional argument "save" (a path in the caller's directory) it also stores
the payload there, as the standard operations do: quota reserved before the first byte is
read, the bytes written to a temporary file in the server's scratch directory, fsynced,
renamed into place and the directory fsynced before answering, so an answer means the file
is durable, and a failure leaves the old file (if any) as it was.

What it shows: Operation/handler/run, payload_chunks(), Failure, quota_reserve/commit, and
call.open_parent(), which resolves a client's path without ever following a symlink or
leaving the user's directory.

Enable it in ops.json (the program runs with the directory of ops.json as its working
directory; copy wordcount.py there, or give an absolute path):
    "wordcount": {"allow": ["*"], "exec": ["/usr/bin/python3", "wordcount.py"],
                  "max_payload": 1073741824}
Call it:  opclient call wordcount --in notes.txt -a save=copies/notes.txt
"""

import os
import stat
import sys

try:
    from opserver_plugin import Failure, Operation, error_from_errno
except ImportError:  # run from the source tree: sdk/python next to examples/
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                    "..", "..", "sdk", "python"))
    from opserver_plugin import Failure, Operation, error_from_errno

op = Operation(
    summary="Counts the bytes, lines and words of the payload; can also save it",
    version="1.0.0",
    payload="in",
    args_schema={
        "type": "object",
        "properties": {"save": {"type": "string", "minLength": 1, "maxLength": 4096}},
        "additionalProperties": False,
    },
)

CHUNK = 256 * 1024


class Counter:
    """wc's counts over a stream of chunks; a word may span two chunks."""

    def __init__(self):
        self.bytes = self.lines = self.words = 0
        self._in_word = False  # did the previous chunk end inside a word?

    def add(self, chunk: bytes) -> None:
        self.bytes += len(chunk)
        self.lines += chunk.count(b"\n")
        words = len(chunk.split())  # bytes.split(): ASCII whitespace, as wc in the C locale
        if words and self._in_word and not chunk[:1].isspace():
            words -= 1  # the first word continues the previous chunk's last one
        self.words += words
        self._in_word = not chunk[-1:].isspace()


@op.handler
def wordcount(call):
    save = call.args.get("save")
    if save is None:
        counter = Counter()
        for chunk in call.payload_chunks(CHUNK):
            counter.add(chunk)
        return {"bytes": counter.bytes, "lines": counter.lines, "words": counter.words}
    return count_and_save(call, save)


def count_and_save(call, path):
    # Refused paths (invalid_args, forbidden, not_found, conflict) before any byte is read.
    parent, leaf = call.open_parent(path)
    try:
        old_size, existed = old_file(parent, leaf, path)
        # Room for what the file grows by (a replacement no larger than the old file always
        # fits); the host gives back any reservation still open when the call ends.
        code, token = call.quota_reserve(max(0, call.payload_size - old_size),
                                         0 if existed else 1)
        if code != 0:
            raise Failure(code, f"no room left in your quota to save {path}")
        tmp = call.scratch_name("wordcount")
        fd = -1
        published = False
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                         0o640, dir_fd=call.temp_dir())
            counter = Counter()
            for chunk in call.payload_chunks(CHUNK):
                counter.add(chunk)
                write_all(fd, chunk)
            os.fsync(fd)
            os.close(fd)
            fd = -1
            # The rename replaces the old file (a symlink there was refused above, and a
            # rename never follows one); usage follows what is now on disk.
            os.rename(tmp, leaf, src_dir_fd=call.temp_dir(), dst_dir_fd=parent)
            published = True
            call.quota_commit(token, counter.bytes - old_size, 0 if existed else 1)
            os.fsync(parent)  # the new name is durable before we answer
        except OSError as e:
            raise error_from_errno(e.errno, path) from None
        finally:
            if fd >= 0:
                os.close(fd)
            if not published:
                try:
                    os.unlink(tmp, dir_fd=call.temp_dir())
                except OSError:
                    pass
                call.quota_release(token)
    finally:
        os.close(parent)
    return {"bytes": counter.bytes, "lines": counter.lines, "words": counter.words,
            "saved": path}


def old_file(parent, leaf, path):
    """(size, True) of the regular file being replaced, (0, False) if there is none."""
    try:
        st = os.stat(leaf, dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        return 0, False
    except OSError as e:
        raise error_from_errno(e.errno, path) from None
    if stat.S_ISLNK(st.st_mode):
        raise Failure("forbidden", f"path crosses a symbolic link: {path}")
    if not stat.S_ISREG(st.st_mode):
        raise Failure("conflict", f"is a directory: {path}" if stat.S_ISDIR(st.st_mode)
                      else f"not a regular file: {path}")
    return st.st_size, True


def write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


if __name__ == "__main__":
    op.run()
