"""The checks of scripts/cluster-test, run once it has started PostgreSQL, three nodes and
HAProxy (ports and directories come from the environment it sets). Prints PASS/FAIL per
check and a capacity table; exits 1 if any check failed."""

import hashlib
import io
import json
import os
import random
import socket
import stat
import struct
import subprocess
import threading
import time

import opsclient

TMP = os.environ["CLUSTER_TMP"]
BASE = int(os.environ["CLUSTER_BASE_PORT"])
HAPROXY = BASE
NODE = {i: BASE + 10 * i for i in (1, 2, 3)}
ADMIN_KEY = open(os.path.join(TMP, "admin.key")).read().strip()
STORAGE = os.path.join(TMP, "storage")
OPSBENCH = os.environ.get("OPSBENCH", "")

results = []


def report(name, ok, detail=""):
    results.append(ok)
    print(f"{'PASS' if ok else 'FAIL'}  {name}" + (f"  ({detail})" if detail else ""), flush=True)


# --- direct connections to a node: its listener wants a PROXY v2 header first ---
_create_connection = socket.create_connection


def _with_proxy_header(address, *args, **kwargs):
    sock = _create_connection(address, *args, **kwargs)
    if address[1] in NODE.values():
        src = sock.getsockname()
        header = (b"\r\n\r\n\x00\r\nQUIT\n" + bytes([0x21, 0x11]) + struct.pack("!H", 12)
                  + socket.inet_aton(src[0]) + socket.inet_aton(address[0])
                  + struct.pack("!HH", src[1], address[1]))
        sock.sendall(header)
    return sock


socket.create_connection = _with_proxy_header


def connect(port, user, key, timeout=30.0):
    return opsclient.Client("127.0.0.1", port, user, key, timeout=timeout)


def admin(port):
    return connect(port, "admin", ADMIN_KEY)


def unique(prefix):
    return f"{prefix}{random.randrange(16**8):08x}"


def wait_login(port, user, key, limit):
    """Seconds until `user` can log in at `port`, or None after `limit` seconds."""
    start = time.monotonic()
    while time.monotonic() - start < limit:
        try:
            connect(port, user, key).close()
            return time.monotonic() - start
        except opsclient.OpsError:
            time.sleep(0.005)
    return None


# --- a) registered on node 1, logs in on node 2 and through HAProxy at once ---
def check_register_then_login():
    with admin(NODE[1]) as a:
        name = unique("alice")
        key = a.register(name)["key"]
    t2 = wait_login(NODE[2], name, key, 1.0)
    t3 = wait_login(NODE[3], name, key, 1.0)
    th = [wait_login(HAPROXY, name, key, 1.0) for _ in range(3)]
    ok = t2 is not None and t3 is not None and all(t is not None for t in th)
    fmt = lambda t: "never" if t is None else f"{t * 1000:.1f} ms"
    report("a) register on node 1, login on node 2, node 3 and via HAProxy within 1 s", ok,
           f"node2 {fmt(t2)}, node3 {fmt(t3)}, haproxy {', '.join(fmt(t) for t in th)}")


# --- b) the same name registered on all three nodes at once: exactly one ok ---
def check_register_race(rounds=10):
    conns = [admin(NODE[i]) for i in (1, 2, 3)]
    bad = []
    for _ in range(rounds):
        name = unique("race")
        barrier = threading.Barrier(3)
        outcome = [None] * 3

        def go(k):
            barrier.wait()
            try:
                conns[k].register(name)
                outcome[k] = "ok"
            except opsclient.OpsError as e:
                outcome[k] = e.code

        threads = [threading.Thread(target=go, args=(k,)) for k in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if outcome.count("ok") != 1 or outcome.count("already_exists") != 2:
            bad.append(outcome)
    for c in conns:
        c.close()
    report(f"b) {rounds} rounds of one name registered on 3 nodes at once: exactly one ok",
           not bad, f"bad rounds: {bad}" if bad else "")


# --- c) rekey on node 1 closes the user's connection on node 2 within 1 s ---
def check_rekey_closes():
    with admin(NODE[1]) as a:
        name = unique("bob")
        key = a.register(name)["key"]
        if wait_login(NODE[2], name, key, 1.0) is None:
            report("c) rekey on node 1 closes the connection on node 2 within 1 s", False,
                   "could not log in on node 2")
            return
        held = connect(NODE[2], name, key)
        held.describe()
        a.rekey(name)
        start = time.monotonic()
    closed_after = None
    while time.monotonic() - start < 3.0:
        try:
            held.stat("")
        except opsclient.OpsError:
            closed_after = time.monotonic() - start
            break
        time.sleep(0.005)
    held.close()
    old_refused = wait_login(NODE[2], name, key, 0.2) is None
    ok = closed_after is not None and closed_after < 1.0 and old_refused
    report("c) rekey on node 1 closes the connection on node 2 within 1 s", ok,
           ("not closed within 3 s" if closed_after is None else
            f"closed {closed_after * 1000:.1f} ms after the rekey answer")
           + ("" if old_refused else "; the old key still logs in on node 2"))


# --- d) uploads and downloads through HAProxy while nodes are SIGKILLed and restarted ---
def not_stored(user, digests):
    """The paths of `digests` (path -> sha256 hex) not on the shared storage with that
    content, each with why."""
    wrong = []
    for path, digest in digests.items():
        try:
            with open(os.path.join(STORAGE, user, path), "rb") as f:
                if hashlib.sha256(f.read()).hexdigest() != digest:
                    wrong.append(path + " (different content)")
        except OSError:
            wrong.append(path + " (missing)")
    return wrong


def check_kill_during_transfers(workers=4, seconds=24):
    with admin(NODE[1]) as a:
        user = unique("load")
        key = a.register(user)["key"]
    wait_login(HAPROXY, user, key, 1.0)
    acked = {}  # path -> sha256 hex
    lock = threading.Lock()
    stats = {"uploads": 0, "downloads": 0, "retries": 0, "errors": {}, "bad_downloads": 0}
    stop = threading.Event()

    def note_error(e, phase):
        with lock:
            stats["retries"] += 1
            what = f"{phase} {e.code}"
            stats["errors"][what] = stats["errors"].get(what, 0) + 1
            if e.code not in ("connection_lost", "cannot_connect"):
                stats.setdefault("messages", []).append(f"{phase}: {e.code}: {e.message}")

    def worker(w):
        rng = random.Random(w)
        client = None
        n = 0
        while not stop.is_set():
            n += 1
            path = f"w{w}/f{n}"
            data = rng.randbytes(rng.choice([4096, 65536, 1 << 20, 4 << 20]))
            digest = hashlib.sha256(data).hexdigest()
            for attempt in range(30):  # retry the same file until acknowledged
                phase = "connect"
                try:
                    if client is None or client.broken:
                        client = connect(HAPROXY, user, key, timeout=20)
                    phase = "upload"
                    try:
                        client.upload(path, data)
                    except opsclient.OpsError as e:
                        if e.code != "already_exists":
                            raise
                        # An earlier attempt was done but its answer lost: same content?
                        got = client.stat(path, sha256=True)
                        if got.get("sha256") != digest:
                            raise
                    with lock:
                        acked[path] = digest
                        stats["uploads"] += 1
                    # read back something acknowledged earlier
                    with lock:
                        old, want = rng.choice(list(acked.items()))
                    phase = "download"
                    body = client.download(old).payload
                    with lock:
                        stats["downloads"] += 1
                        if hashlib.sha256(body).hexdigest() != want:
                            stats["bad_downloads"] += 1
                    break
                except opsclient.OpsError as e:
                    note_error(e, phase)
                    if client is not None:
                        client.close()
                        client = None
                    time.sleep(0.1)
        if client is not None:
            client.close()

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(workers)]
    for t in threads:
        t.start()
    kills = []
    time.sleep(seconds / 4)
    for victim in (2, 3):
        before = stats["uploads"]
        subprocess.run([os.path.join(TMP, f"node{victim}", "node.sh"), "kill"], check=True)
        time.sleep(2)
        subprocess.run([os.path.join(TMP, f"node{victim}", "node.sh"), "start"], check=True)
        kills.append(victim)
        time.sleep(seconds / 4)
        if stats["uploads"] == before:
            kills.append("no progress")
    stop.set()
    for t in threads:
        t.join()
    # every acknowledged upload is on the shared storage with its sha256
    missing = not_stored(user, acked)
    # Each node keeps its temporaries in its own .ops-tmp/node-<id>/ and empties only that at
    # start, so no upload on a surviving node may fail because another node restarted.
    swept = sum(n for what, n in stats["errors"].items() if what == "upload not_found")
    ok = (not missing and stats["bad_downloads"] == 0 and stats["uploads"] > 0
          and "no progress" not in kills and swept == 0)
    report(f"d) transfers via HAProxy while node 2 then node 3 are SIGKILLed and restarted", ok,
           f"{stats['uploads']} uploads acknowledged, all on the storage with their sha256"
           if not missing else f"missing or wrong: {missing[:5]} ({len(missing)})")
    print(f"      downloads verified {stats['downloads']}, bad {stats['bad_downloads']}; "
          f"failed attempts retried {stats['retries']} {stats['errors']}; kills {kills}",
          flush=True)
    for m in stats.get("messages", [])[:10]:
        print(f"      {m}", flush=True)
    if swept:
        print(f"      {swept} upload(s) failed not_found: a temporary file went missing "
              "(a restarting node must only empty its own .ops-tmp/node-<id>/)", flush=True)


# --- j) resumable uploads through HAProxy, resumed on whichever node, while nodes die ---
def check_resumable_across_kills(workers=3, seconds=24, chunk=256 << 10):
    """Each worker uploads files with upload_open/append/commit through HAProxy, on a new
    connection every few appends (so on changing nodes), while node 1, 2 and 3 are SIGKILLed
    and restarted in turn, and cuts some appends short itself (part of the payload, then the
    connection closed). After any failure it resumes as a client must: upload_status,
    append from the offset reported, commit with the sha256. Every status must report at
    least the last acknowledged offset, and every upload must complete."""
    with admin(NODE[1]) as a:
        user = unique("resume")
        key = a.register(user)["key"]
    wait_login(HAPROXY, user, key, 1.0)
    lock = threading.Lock()
    stats = {"completed": 0, "appends": 0, "resumes": 0, "cut": 0, "errors": {}, "problems": []}
    stop = threading.Event()
    done = {}  # path -> sha256 of completed uploads

    def note(e, phase):
        with lock:
            what = f"{phase} {e.code}"
            stats["errors"][what] = stats["errors"].get(what, 0) + 1

    def problem(text):
        with lock:
            stats["problems"].append(text)

    def worker(w):
        rng = random.Random(1000 + w)
        client = None
        uses = 0
        n = 0

        def fresh():
            nonlocal client, uses
            if client is not None:
                client.close()
            client = connect(HAPROXY, user, key, timeout=20)
            uses = rng.randint(1, 4)  # appends before the next new connection

        while not stop.is_set():
            n += 1
            path = f"r{w}/f{n}"
            data = rng.randbytes(rng.choice([1 << 20, 3 << 20, 5 << 20]) + rng.randrange(4096))
            digest = hashlib.sha256(data).hexdigest()
            upload = None      # the id, once known
            opened = False     # an upload_open was sent (its answer may have been lost)
            acked = 0          # the highest offset an append acknowledged
            offset = 0         # where the next append goes; -1: ask upload_status first
            committed = False
            for attempt in range(400):
                phase = "connect"
                try:
                    if client is None or client.broken or uses <= 0:
                        fresh()
                    uses -= 1
                    if upload is None and opened:
                        # The open's answer was lost: the most recent upload to the path.
                        phase = "status"
                        try:
                            upload = client.call("upload_status", {"path": path})["upload"]
                            offset = -1
                        except opsclient.OpsError as e:
                            if e.code != "not_found":
                                raise
                            opened = False
                    if upload is None:
                        phase = "open"
                        opened = True
                        upload = client.call("upload_open", {"path": path})["upload"]
                    if offset < 0:
                        phase = "status"
                        got = client.call("upload_status", {"upload": upload})["offset"]
                        with lock:
                            stats["resumes"] += 1
                        if got < acked or got > len(data):
                            problem(f"{path}: status {got}, acknowledged {acked}")
                        offset = got
                    if offset < len(data):
                        phase = "append"
                        piece = data[offset:offset + chunk]
                        if len(piece) > 1 and rng.random() < 0.15:
                            # The client dies mid-append: the header promises the whole
                            # piece, part of it is sent, then the connection is closed.
                            with lock:
                                stats["cut"] += 1
                            client.call("upload_append", {"upload": upload, "offset": offset},
                                        io.BytesIO(piece[:rng.randrange(1, len(piece))]),
                                        payload_size=len(piece))
                            problem(f"{path}: an append cut short was answered ok")
                            continue
                        res = client.call("upload_append", {"upload": upload, "offset": offset},
                                          piece)
                        if res["offset"] != offset + len(piece):
                            problem(f"{path}: append at {offset} answered {res['offset']}")
                        offset = res["offset"]
                        acked = max(acked, offset)
                        with lock:
                            stats["appends"] += 1
                        continue
                    phase = "commit"
                    res = client.call("upload_commit", {"upload": upload, "sha256": digest})
                    if res.get("sha256") != digest or res.get("size") != len(data):
                        problem(f"{path}: commit answered {dict(res)}")
                    committed = True
                    break
                except opsclient.OpsError as e:
                    note(e, phase)
                    if phase in ("status", "append", "commit") and e.code == "not_found" \
                            and upload is not None:
                        # An earlier commit's answer was lost: the file must be there.
                        for _ in range(20):
                            try:
                                if client is None or client.broken:
                                    fresh()
                                got = client.stat(path, sha256=True)
                                committed = got.get("sha256") == digest
                                break
                            except opsclient.OpsError as e2:
                                committed = False
                                if e2.code == "not_found":
                                    break
                                client = None
                                time.sleep(0.1)
                        if not committed:
                            problem(f"{path}: gone at commit and not published")
                        break
                    if phase == "commit" and e.code == "checksum_mismatch":
                        problem(f"{path}: checksum_mismatch at commit: {e.message}")
                        break
                    if e.code == "conflict" and "offset" in e.details:
                        # Not at the end, or another append (a cut connection's) still runs.
                        offset = int(e.details["offset"])
                        if offset < acked:
                            problem(f"{path}: conflict says {offset}, acknowledged {acked}")
                        time.sleep(0.05)
                        continue
                    if phase in ("append", "commit", "status"):
                        offset = -1  # resume: ask upload_status before the next append
                    if client is not None:
                        client.close()
                        client = None
                    time.sleep(0.05)
            if not committed:
                problem(f"{path}: not completed (upload {upload})")
            else:
                with lock:
                    stats["completed"] += 1
                    done[path] = digest
        if client is not None:
            client.close()

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(workers)]
    for t in threads:
        t.start()
    kills = []
    time.sleep(seconds / 5)
    for victim in (1, 2, 3):
        subprocess.run([os.path.join(TMP, f"node{victim}", "node.sh"), "kill"], check=True)
        time.sleep(1.5)
        subprocess.run([os.path.join(TMP, f"node{victim}", "node.sh"), "start"], check=True)
        kills.append(victim)
        time.sleep(seconds / 5)
    stop.set()
    for t in threads:
        t.join()
    wrong = not_stored(user, done)
    leftover = []
    udir = os.path.join(STORAGE, ".ops-tmp", "uploads", user)
    if os.path.isdir(udir):
        leftover = sorted(os.listdir(udir))
    interrupted = sum(n for what, n in stats["errors"].items()
                      if what.split()[1] in ("connection_lost", "cannot_connect", "unavailable"))
    ok = (stats["completed"] > 0 and not stats["problems"] and not wrong and not leftover
          and stats["resumes"] > stats["cut"] / 2)
    report("j) resumable uploads via HAProxy, resumed on any node while nodes 1, 2, 3 are "
           "SIGKILLed and restarted", ok,
           f"{stats['completed']} uploads completed with their sha256 after {stats['resumes']} "
           f"resumes; {stats['appends']} appends, {stats['cut']} cut short by the client"
           if ok else
           f"problems {stats['problems'][:5]} wrong {wrong[:5]} left in uploads/ {leftover[:5]}")
    print(f"      interrupted calls {interrupted}, errors by phase {stats['errors']}; "
          f"kills {kills}", flush=True)


# --- e) PostgreSQL restarted: register says unavailable, then works, no node restarted ---
def check_pg_restart():
    conns = {i: admin(NODE[i]) for i in (1, 2, 3)}
    pg = os.path.join(TMP, "pg.sh")
    subprocess.run([pg, "stop"], check=True)
    codes = []
    for i in (1, 2, 3):
        try:
            conns[i].register(unique("down"))
            codes.append("ok")
        except opsclient.OpsError as e:
            codes.append(e.code)
    still_serving = True
    try:
        conns[2].stat("")  # an open connection carries on
    except opsclient.OpsError:
        still_serving = False
    subprocess.run([pg, "start"], check=True)
    start = time.monotonic()
    name, key, took = unique("back"), None, None
    while time.monotonic() - start < 15:
        try:
            if conns[1].broken:
                conns[1] = admin(NODE[1])
            key = conns[1].register(name)["key"]
            took = time.monotonic() - start
            break
        except opsclient.OpsError:
            time.sleep(0.1)
    login = key is not None and wait_login(NODE[3], name, key, 5.0) is not None
    for c in conns.values():
        c.close()
    ok = codes == ["unavailable"] * 3 and still_serving and took is not None and login
    report("e) PostgreSQL stopped: register unavailable on every node; after restart it works",
           ok, f"while down: {codes}, open connection {'served' if still_serving else 'FAILED'}; "
           + (f"register ok {took:.2f} s after PostgreSQL was back, login on node 3 "
              + ("ok" if login else "FAILED") if took is not None else "register never worked again"))


# --- g) PostgreSQL statements per login, register and rekey (log_statement=all) ---
def pg_statements():
    # Statements the nodes run on their own every few seconds (heartbeats: the shared usage
    # ledger's) are marked "opserver housekeeping" and are not the work of a request.
    with open(os.path.join(TMP, "pg", "postgres.log"), errors="replace") as f:
        return [l.split("LOG:", 1)[1].strip() for l in f
                if ("LOG:  statement:" in l or "LOG:  execute" in l)
                and "opserver housekeeping" not in l]


def check_pg_round_trips(logins=30):
    with admin(NODE[1]) as a:
        name = unique("carol")
        key = a.register(name)["key"]
        wait_login(NODE[2], name, key, 1.0)
        wait_login(NODE[3], name, key, 1.0)
        time.sleep(0.2)
        n0 = len(pg_statements())
        for _ in range(logins):
            connect(HAPROXY, name, key).close()
        n1 = len(pg_statements())
        a.register(unique("dave"))
        time.sleep(0.2)
        n2 = len(pg_statements())
        a.rekey(name)
        time.sleep(0.2)
        all_ = pg_statements()
        n3 = len(all_)
    print(f"      statements: {logins} logins {n1 - n0}; register {n2 - n1}; rekey {n3 - n2}",
          flush=True)
    for line in all_[n1:n3]:
        print(f"        {line[:140]}", flush=True)
    report(f"g) PostgreSQL statements: 0 for {logins} logins of a known user", n1 == n0,
           f"register {n2 - n1}, rekey {n3 - n2} (the listeners' reloads excluded: none happen)")


# --- h) quotas hold under concurrent uploads spread over all nodes ---
def walk(top):
    total, files = 0, 0
    for dirpath, _, names in os.walk(top):
        for n in names:
            st = os.lstat(os.path.join(dirpath, n))
            if stat.S_ISREG(st.st_mode):
                total += st.st_size
                files += 1
    return total, files


def check_quota_spread(per_target=5, each=2, size=100_000, fits=12):
    """Clients of one user upload at once through HAProxy and directly to each node; the
    user's quota has room for `fits` files: exactly that many must succeed."""
    with admin(NODE[1]) as a:
        user = unique("quota")
        key = a.register(user)["key"]
        a.set_quota(user, bytes=fits * size)
    targets = [HAPROXY, NODE[1], NODE[2], NODE[3]]
    for port in targets:
        wait_login(port, user, key, 1.0)
    time.sleep(0.3)  # every node has heard the limit (set_quota's notification)
    clients = [connect(port, user, key) for port in targets for _ in range(per_target)]
    barrier = threading.Barrier(len(clients))
    outcomes = []
    lock = threading.Lock()

    def go(k):
        barrier.wait()
        for n in range(each):
            try:
                clients[k].upload(f"c{k}/f{n}", random.randbytes(size))
                code = "ok"
            except opsclient.OpsError as e:
                code = e.code
            with lock:
                outcomes.append(code)

    threads = [threading.Thread(target=go, args=(k,)) for k in range(len(clients))]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.monotonic() - t0
    disk_bytes, disk_files = walk(os.path.join(STORAGE, user))
    seen = {}
    for i in (1, 2, 3):
        with connect(NODE[i], user, key) as c:
            u = c.usage()
            seen[i] = (u["bytes"], u["files"], u["reserved_bytes"])
    for c in clients:
        c.close()
    attempts = len(outcomes)
    ok_n = outcomes.count("ok")
    refused = outcomes.count("quota_exceeded")
    agree = all(v == (disk_bytes, disk_files, 0) for v in seen.values())
    ok = ok_n == fits and refused == attempts - fits and disk_bytes == fits * size and agree
    report("h) quotas hold under concurrent uploads spread over all nodes "
           "(through HAProxy and direct to nodes)", ok,
           f"{attempts} uploads of {size} bytes by {len(clients)} clients "
           f"({per_target} via HAProxy, {per_target} on each node) for room for {fits}: "
           f"{ok_n} ok, {refused} quota_exceeded, others {sorted(set(outcomes) - {'ok', 'quota_exceeded'})}; "
           f"disk {disk_bytes} bytes / {disk_files} files; usage on nodes 1-3 "
           f"{'all equal to the disk, nothing reserved' if agree else seen}; {took:.2f} s")


def check_quota_round_trips(uploads=20):
    """PostgreSQL statements per upload of a user already counted (heartbeats excluded)."""
    with admin(NODE[1]) as a:
        user = unique("trips")
        key = a.register(user)["key"]
        a.set_quota(user, bytes=1 << 30)
    wait_login(HAPROXY, user, key, 1.0)
    with connect(HAPROXY, user, key) as c:
        c.upload("first", b"x" * 1000)  # counts the user (once for the cluster)
        time.sleep(0.2)
        n0 = len(pg_statements())
        for i in range(uploads):
            c.upload(f"f{i}", b"y" * 4096)
        time.sleep(0.2)
        lines = pg_statements()[n0:]
    per = len(lines) / uploads
    print(f"      statements for {uploads} uploads: {len(lines)} ({per:.1f} per upload)", flush=True)
    for line in lines[:2]:
        print(f"        {line[:160]}", flush=True)
    report(f"i) PostgreSQL statements per upload: {per:.1f}", per <= 2.0,
           "one reservation and one commit, each a single-statement transaction")


# --- f) capacity: small operations through HAProxy with 1, 2, 3 nodes in service ---
def haproxy_cmd(cmd):
    s = socket.socket(socket.AF_UNIX)
    s.connect(os.path.join(TMP, "haproxy.sock"))
    s.sendall(cmd.encode() + b"\n")
    out = b""
    while chunk := s.recv(4096):
        out += chunk
    s.close()
    return out.decode()


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime (fields 14, 15)


def node_pid(i):
    return int(open(os.path.join(TMP, f"node{i}", "pid")).read())


def check_capacity(clients=6, seconds=3):
    with admin(NODE[1]) as a:
        user = unique("bench")
        key = a.register(user)["key"]
    key_file = os.path.join(TMP, "bench.key")
    with open(key_file, "w") as f:
        f.write(key + "\n")
    os.chmod(key_file, 0o600)
    wait_login(HAPROXY, user, key, 1.0)
    hz = os.sysconf("SC_CLK_TCK")
    haproxy_pid = int(open(os.path.join(TMP, "haproxy.pid")).read().split()[0])
    use_opsbench = bool(OPSBENCH) and os.access(OPSBENCH, os.X_OK)
    with open("/proc/loadavg") as f:
        load_before = " ".join(f.read().split()[:3])
    rows = []
    for active in (1, 2, 3):
        for i in (1, 2, 3):
            haproxy_cmd(f"set server opservers/node{i} state "
                        + ("ready" if i <= active else "maint"))
        time.sleep(0.3)
        before = {i: cpu_ticks(node_pid(i)) for i in (1, 2, 3)}
        hbefore = cpu_ticks(haproxy_pid)
        t0 = time.monotonic()
        if use_opsbench:
            procs = [subprocess.Popen([OPSBENCH, "pingpong", "--op", "describe", "--duration",
                                       str(seconds), "--port", str(HAPROXY), "--user", user,
                                       "--key-file", key_file, "--json"],
                                      stdout=subprocess.PIPE, text=True)
                     for _ in range(clients)]
            total = 0
            for p in procs:
                out, _ = p.communicate()
                total += json.loads(out.strip().splitlines()[-1])["ops"]
        else:
            counts = [0] * clients

            def loop(k):
                with connect(HAPROXY, user, key) as c:
                    end = time.monotonic() + seconds
                    while time.monotonic() < end:
                        c.describe()
                        counts[k] += 1

            threads = [threading.Thread(target=loop, args=(k,)) for k in range(clients)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            total = sum(counts)
        wall = time.monotonic() - t0
        cpu = sum(cpu_ticks(node_pid(i)) - before[i] for i in (1, 2, 3)) / hz
        hcpu = (cpu_ticks(haproxy_pid) - hbefore) / hz
        rows.append((active, total / wall, cpu / total * 1e6 if total else 0.0, cpu / wall,
                     hcpu / total * 1e6 if total else 0.0))
    for i in (1, 2, 3):
        haproxy_cmd(f"set server opservers/node{i} state ready")
    tool = "opsbench pingpong --op describe" if use_opsbench else "python opsclient describe loop"
    print(f"\nCapacity through HAProxy: {clients} clients x {seconds} s, {tool}, "
          f"{os.cpu_count()} CPU(s) shared by clients, HAProxy, nodes and PostgreSQL")
    with open("/proc/loadavg") as f:
        print(f"load average before/after: {load_before} / {' '.join(f.read().split()[:3])}")
    print(f"{'nodes':>5} {'ops/s':>10} {'node CPU us/op':>15} {'node CPU cores':>15} "
          f"{'HAProxy CPU us/op':>18}")
    for active, rate, us, cores, hus in rows:
        print(f"{active:>5} {rate:>10.0f} {us:>15.1f} {cores:>15.2f} {hus:>18.1f}")
    report("f) capacity figures measured", all(r[1] > 0 for r in rows))


for check in (check_register_then_login, check_register_race, check_rekey_closes,
              check_kill_during_transfers, check_resumable_across_kills, check_pg_restart,
              check_pg_round_trips, check_quota_spread, check_quota_round_trips, check_capacity):
    try:
        check()
    except Exception as e:  # a check that crashed is a failed check; go on with the rest
        report(f"{check.__name__} crashed", False, f"{type(e).__name__}: {e}")

print(f"\n{results.count(True)} passed, {results.count(False)} failed", flush=True)
raise SystemExit(0 if all(results) else 1)
