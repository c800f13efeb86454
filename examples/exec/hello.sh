#!/bin/bash
# hello: an exec operation in plain bash, with no helper library: the worker protocol by hand.
#
# What it shows: the whole protocol is lines of JSON on stdin/stdout. The server sends
# {"init": ...} once; we answer {"ready": ...} with what `describe` shows. Then, for each
# {"call": ...} line, we send one host request (send_result), read its one-line reply, and
# end the call with {"done": CODE}. At EOF (the server closed the socket) we exit 0.
# stdout IS the protocol: anything for people goes to stderr (the server's log).
# The call also carries two directory fds (SCM_RIGHTS); read(2) never sees them and the
# kernel closes them, which is fine for an operation that touches no files.
#
# Enable it in ops.json (the program runs in the directory of ops.json; copy hello.sh
# there, or give an absolute path):
#     "hello": {"allow": ["*"], "exec": ["/bin/bash", "hello.sh"]}
# Call it:   opclient call hello -a name=Ada   ->   {"greeting":"hello Ada","user":"alice"}
#
# JSON without jq: we never parse JSON in general. The schema below lets "name" hold only
# letters, digits, space, '_', '.' and '-', and OPS/1 user names match
# ^[a-z_][a-z0-9_.-]{0,31}$, so neither can contain a quote, a backslash or a control
# character: pulling them out with sed and printing them back between quotes is exact, and
# the result is always valid JSON. (An operation taking free text needs a real JSON parser:
# use a language that has one, e.g. Python with sdk/python/opserver_plugin.py.)
set -u

# 1. init -> ready. Anything other than init first: refuse, as the protocol says.
IFS= read -r init || exit 0
case $init in
  *'"init"'*) ;;
  *) printf '{"error":"the first message was not init"}\n'; exit 1 ;;
esac
printf '%s\n' '{"ready":{"summary":"Greets the caller","version":"1.0.0","payload":"none","args_schema":{"type":"object","properties":{"name":{"type":"string","pattern":"^[A-Za-z0-9 _.-]{1,64}$"}},"additionalProperties":false}}}'

# The string value of "KEY" in a JSON line, restricted to CHARS (a bracket expression);
# empty when absent. Greedy .* takes the last "KEY": "..." on the line.
json_field() { # LINE KEY CHARS
  printf '%s\n' "$1" | sed -n 's/.*"'"$2"'"[[:space:]]*:[[:space:]]*"\('"$3"'*\)".*/\1/p'
}

# 2. calls, one at a time, until EOF.
while IFS= read -r line; do
  case $line in
    *'"call"'*) ;;
    *) echo "hello.sh: expected a call, got: ${line:0:200}" >&2; exit 2 ;;
  esac
  user=$(json_field "$line" user '[a-z0-9_.-]')
  name=$(json_field "$line" name '[A-Za-z0-9 _.-]')
  [ -n "$name" ] || name=$user

  printf '{"host":"send_result","result":{"greeting":"hello %s","user":"%s"},"payload_size":0}\n' \
    "$name" "$user"
  IFS= read -r reply || exit 0   # {"ret":0}, or {"ret":-1} if the client is gone
  case $reply in
    *'"ret":0'* | *'"ret": 0'*) printf '{"done":0}\n' ;;
    *) echo "hello.sh: send_result failed: $reply" >&2; printf '{"done":"unavailable"}\n' ;;
  esac
done
exit 0
