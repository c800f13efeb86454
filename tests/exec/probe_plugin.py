"""A test exec plugin for opserver_plugin.py: args {"do": WHAT, ...} picks a behaviour, so
one process can show how the helper answers each kind of handler outcome."""

import os

from opserver_plugin import CODES, Failure, Operation

op = Operation(summary="Test probe for opserver_plugin", version="0.0.1", payload="out",
               args_schema={"type": "object", "properties": {"do": {"type": "string"}}})


@op.on_init
def check_settings(name, settings):
    if settings.get("refuse"):
        raise Failure("invalid_args", "refused: settings.refuse is set")


@op.handler
def probe(call):
    do = call.args.get("do")
    if do == "echo":
        return {"user": call.user, "id": call.id, "operation": call.operation,
                "settings": call.settings, "payload_size": call.payload_size,
                "dirs_open": [is_dir(call.user_dir), is_dir(call.scratch_dir)],
                "user_dir_ino": os.fstat(call.user_dir).st_ino}
    if do == "raise":
        raise KeyError("deliberate bug")
    if do == "not_a_dict":
        return ["a", "list"]
    if do == "nothing":
        return None
    if do == "failure":
        raise Failure("conflict", "it changed", details={"offset": 42})
    if do == "failure_number":
        raise Failure(9, "conflict by number")
    if do == "fail_by_name":
        call.fail("not_found", "no such file: x")
        return None
    if do == "print":
        print("this goes to stderr, not the protocol")
        return {"printed": True}
    if do == "payload_out":
        data = bytes(range(256)) * (6 * 1024 + 1)  # > 1 MiB: split into write_payload calls
        tail = b"from a file\n"
        fd = os.open(".", os.O_TMPFILE | os.O_RDWR, 0o600, dir_fd=call.scratch_dir)
        try:
            os.write(fd, b"xx" + tail)
            call.send_result({"size": len(data) + len(tail)}, len(data) + len(tail))
            call.write(data)
            call.send_file(fd, 2, len(tail))
        finally:
            os.close(fd)
        return None
    if do == "hosts":
        code, token = call.quota_reserve(100, 1)
        out = {
            "reserve": [code, token],
            "commit": call.quota_commit(token, 10, 1),
            "release": call.quota_release(5),
            "hold": call.quota_hold(6, "up-1"),
            "commit_held": call.quota_commit_held("up-1", 3, 0),
            "release_held": call.quota_release_held("nope"),
            "exists_self": call.user_exists(call.user),
            "exists_other": call.user_exists("zed"),
            "create": call.create_user("bob", "k1"),
            "create_q": call.create_user_with_quota("carol", "k2", 1000, -1),
            "remove": call.remove_user("bob"),
            "rekey": call.rekey_user("carol", "k3"),
            "set_quota": call.set_quota("carol", -3, 5),
            "usage_self": call.get_usage(),
            "usage_unknown": call.get_usage("nobody"),
            "closed": call.close_user_connections("carol", False),
        }
        call.usage_adjust(-4, -1)
        call.log("info", "hosts done")
        call.log(3, "an error line")
        return out
    if do == "unknown_host":
        reply, _ = call.host("no_such_function")
        return {"ret": reply["ret"]}
    if do == "codes":
        return {"internal": CODES["internal"]}
    raise Failure("invalid_args", f"unknown do: {do}")


def is_dir(fd):
    import stat
    return stat.S_ISDIR(os.fstat(fd).st_mode)


if __name__ == "__main__":
    op.run()
