"""PromptProxy's benchmark: `make bench` (or `python bench/run.py`).

Starts a fast fake upstream and PromptProxy under gunicorn's gevent worker with
exactly the Docker image's command, on a fresh data directory with SQLite, then
again on a fresh PostgreSQL database (a server the benchmark starts, as the
tests do; `--databases sqlite` skips it); provisions a user,
keys, an api, a model and a prompt through the REST API; then measures, in one
run, direct to the upstream and through PromptProxy with a prompt applied and
request rows on:

  - added latency at concurrency 1 (p50, p99), with wrk;
  - throughput and p50/p99 at concurrency 16 and 64 (one worker);
  - proxy CPU per request, from the worker's own CPU accounting (/proc);
  - 500 concurrent streams (20 chunks, 50 ms apart) with two workers;
  - startup to the first proxied answer; idle RSS and RSS under the stream load;
  - request rows in the database against requests sent.

Everything shares this machine's cores (load tool, upstream and proxy), so the
figures are for comparing runs and against direct, not absolute. Prints one table
and writes it to docs/benchmarks.md (`--quick` does a short smoke run and writes
nothing unless --out is given).
"""

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: PromptProxy and the tests' PostgreSQL helper
    sys.path.insert(0, str(ROOT))
PY = sys.executable
CLK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
ADMIN = ("bench@example.com", "benchmark-password")
CHAT = {"model": "bench:terse", "messages": [{"role": "user", "content": "Say ok twenty times."}]}
DIRECT_CHAT = {"model": "bench", "messages": CHAT["messages"]}


# -- processes ------------------------------------------------------------------

def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def dockerfile_cmd():
    """The CMD of the Dockerfile, so the benchmark runs exactly what the image runs."""
    text = (ROOT / "Dockerfile").read_text()
    return json.loads(re.search(r"^CMD (\[.*\])\s*$", text, re.M).group(1))


def gunicorn_cmd(port, workers):
    cmd = dockerfile_cmd()
    cmd = [f"127.0.0.1:{port}" if arg.startswith("0.0.0.0:") else arg for arg in cmd]
    cmd[cmd.index("--workers") + 1] = str(workers)
    return cmd


def env_for(data_dir, database=None):
    """The server's environment: the data dir, and with PostgreSQL its URL and the
    shared secrets (`database` = {"url": ..., "secrets": {...}})."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROMPTPROXY_")}
    env["PATH"] = f"{Path(PY).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PROMPTPROXY_DATA_DIR"] = str(data_dir)
    if database:
        env["PROMPTPROXY_DATABASE_URL"] = database["url"]
        env.update(database["secrets"])
    return env


class Proc:
    def __init__(self, cmd, env=None, log=None):
        self.log = open(log, "wb") if log else subprocess.DEVNULL
        self.process = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                        start_new_session=True)

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.log is not subprocess.DEVNULL:
            self.log.close()

    def workers(self):
        try:
            text = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text()
        except OSError:
            return []
        return [int(pid) for pid in text.split()]


def cpu_seconds(pids):
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / CLK  # utime + stime
    return total


def rss_mib(pid):
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE / 2**20
    except OSError:
        return 0.0


def wait_for(predicate, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return True
        except OSError:
            pass
        time.sleep(0.01)
    raise RuntimeError("timed out waiting for the server")


def http(method, url, body=None, headers=None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json", **(headers or {})})
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status, json.loads(response.read() or b"null")


# -- set-up -------------------------------------------------------------------------

def provision(base, upstream_url):
    """A user with a key per kind of load (so rows can be counted per run), an api,
    a model and a prompt."""
    _, auth = http("POST", base + "/api/collections/_superusers/auth-with-password",
                   {"identity": ADMIN[0], "password": ADMIN[1]})
    token = {"Authorization": auth["token"]}

    def create(collection, **data):
        return http("POST", f"{base}/api/collections/{collection}/records", data, token)[1]

    user = create("users", name="Bench")
    keys = {kind: create("keys", user=user["id"], label=kind)
            for kind in ("warmup", "wrk", "exact", "streams", "revoked")}
    # Limits far above what the run sends: every call is checked and counted, none refused.
    keys["limited"] = create("keys", user=user["id"], label="limited", rpm=10**9, tpm=10**12, rpd=10**9,
                             concurrency=10**6)
    keys = {kind: record["key"] for kind, record in keys.items()} | {"_token": auth["token"],
                                                                     "_revoked_id": keys["revoked"]["id"]}
    api = create("apis", name="Upstream", base_url=upstream_url, api_key="sk-bench-upstream")
    create("models", api=api["id"], model="bench", name="bench")
    create("prompts", name="terse", instructions="Answer tersely.")
    return keys


def start_proxy(port, data_dir, workers, log, database=None):
    proxy = Proc(gunicorn_cmd(port, workers), env_for(data_dir, database), log)
    wait_for(lambda: http("GET", f"http://127.0.0.1:{port}/api/health")[0] == 200)
    wait_for(lambda: len(proxy.workers()) == workers)
    return proxy


# -- load ---------------------------------------------------------------------------

WRK_LUA = """
wrk.method = "POST"
wrk.body = [[%s]]
wrk.headers["Content-Type"] = "application/json"
%s
"""


def wrk(url, body, key, connections, seconds, scratch):
    script = scratch / f"wrk-{connections}.lua"
    auth = f'wrk.headers["Authorization"] = "Bearer {key}"' if key else ""
    script.write_text(WRK_LUA % (json.dumps(body), auth))
    out = subprocess.run(["wrk", "-t", str(min(connections, 2)), "-c", str(connections), "-d", f"{seconds}s",
                          "--latency", "-s", str(script), url], capture_output=True, text=True, check=True).stdout

    def ms(label):
        match = re.search(rf"^\s*{label}\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        value, unit = float(match.group(1)), match.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    requests = int(re.search(r"(\d+) requests in", out).group(1))
    errors = sum(int(n) for n in re.findall(r"(?:Non-2xx or 3xx responses|connect|read|write|timeout)[: ]+(\d+)", out))
    return {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)), "p50": ms("50%"),
            "p99": ms("99%"), "requests": requests, "errors": errors}


def exact_requests(url, key, total, concurrency):
    """Send exactly `total` chat calls (for the row count), `concurrency` at a time."""
    import http.client

    lock, sent, failures = threading.Lock(), [0], [0]
    body = json.dumps(CHAT).encode()
    host, port = url.split("//")[1].split("/")[0].split(":")

    def worker():
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        while True:
            with lock:
                if sent[0] >= total:
                    break
                sent[0] += 1
            conn.request("POST", "/v1/chat/completions", body,
                         {"Content-Type": "application/json", "Authorization": f"Bearer {key}"})
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                with lock:
                    failures[0] += 1
        conn.close()

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return failures[0]


def streams(url, count, key, model):
    out = subprocess.run([PY, str(ROOT / "bench" / "streams.py"), url, str(count), key or "", model],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def revocation_ms(base, keys):
    """Revoke a key through the REST API; how long until every worker refuses it
    (the end of the last success before 20 refusals in a row)."""
    headers = {"Authorization": f"Bearer {keys['revoked']}"}
    for _ in range(20):
        http("GET", base + "/v1/models", headers=headers)
    revoked = time.perf_counter()
    http("PATCH", f"{base}/api/collections/keys/records/{keys['_revoked_id']}", {"active": False},
         {"Authorization": keys["_token"]})
    last_success, refused = revoked, 0
    while refused < 20:
        try:
            http("GET", base + "/v1/models", headers=headers)
            last_success, refused = time.perf_counter(), 0
        except urllib.error.HTTPError:
            refused += 1
        time.sleep(0.005)
    return (last_success - revoked) * 1000


def sample_rss(pids, stop, peak):
    while not stop.is_set():
        for pid in pids:
            peak[pid] = max(peak.get(pid, 0), rss_mib(pid))
        stop.wait(0.05)


def count_rows(data_dir, database=None):
    if database:
        import psycopg

        conn = psycopg.connect(database["url"])
    else:
        conn = sqlite3.connect(Path(data_dir) / "data.db")
    try:
        rows = dict(conn.execute("SELECT k.label, count(*) FROM requests r JOIN keys k ON k.id = r.key "
                                 "GROUP BY k.label").fetchall())
        counted = conn.execute("SELECT count(*) FROM requests r JOIN keys k ON k.id = r.key "
                               "WHERE k.label = 'streams' AND r.total_tokens = 32").fetchone()[0]
    finally:
        conn.close()
    return rows, counted


def postgresql():
    """A PostgreSQL server of the benchmark's own, and the settings of a fresh
    database on it (the same cluster the tests start)."""
    import secrets

    from promptproxy.data import crypto
    from tests.postgres import Cluster

    cluster = Cluster().start()
    return cluster, {"url": cluster.new_database(),
                     "secrets": {"PROMPTPROXY_SECRET_KEY": secrets.token_urlsafe(48),
                                 "PROMPTPROXY_ENCRYPTION_KEY": crypto.new_key()}}


# -- the run ------------------------------------------------------------------------

def run(quick=False, database=None):
    seconds = 2 if quick else 8
    n_streams = 50 if quick else 500
    n_exact = 200 if quick else 2000
    scratch = Path(tempfile.mkdtemp(prefix="promptproxy-bench-"))
    data_dir = scratch / "pb_data"
    results = {"quick": quick}
    upstream_port = free_port()
    upstream = Proc([PY, str(ROOT / "bench" / "upstream.py"), str(upstream_port)])
    upstream_url = f"http://127.0.0.1:{upstream_port}/v1"
    direct = upstream_url + "/chat/completions"
    try:
        wait_for(lambda: socket.create_connection(("127.0.0.1", upstream_port)).close() or True)
        subprocess.run([PY, "app.py", "superuser", "create", *ADMIN, "--dir", str(data_dir)],
                       cwd=ROOT, check=True, capture_output=True, env=env_for(data_dir, database))

        port = free_port()
        proxy = start_proxy(port, data_dir, 1, scratch / "provision.log", database)
        base = f"http://127.0.0.1:{port}"
        keys = provision(base, upstream_url)
        proxy.stop()

        # Startup: a restart on an existing database, to the first proxied answer.
        started = time.perf_counter()
        proxy = Proc(gunicorn_cmd(port, 1), env_for(data_dir, database), scratch / "proxy-1.log")
        wait_for(lambda: http("POST", base + "/v1/chat/completions", CHAT,
                              {"Authorization": f"Bearer {keys['warmup']}"})[0] == 200)
        results["startup_s"] = time.perf_counter() - started
        [worker] = proxy.workers()
        wrk(base + "/v1/chat/completions", CHAT, keys["warmup"], 1, 1, scratch)
        results["idle_rss_mib"] = rss_mib(worker)

        for c in (1, 16, 64):
            results[f"direct_c{c}"] = wrk(direct, DIRECT_CHAT, None, c, seconds, scratch)
            before = cpu_seconds([worker, proxy.process.pid])
            results[f"proxy_c{c}"] = measured = wrk(base + "/v1/chat/completions", CHAT, keys["wrk"], c,
                                                    seconds, scratch)
            spent = cpu_seconds([worker, proxy.process.pid]) - before
            measured["cpu_ms"] = spent * 1000 / max(1, measured["requests"])
        before = cpu_seconds([worker, proxy.process.pid])
        results["limited_c16"] = limited = wrk(base + "/v1/chat/completions", CHAT, keys["limited"], 16,
                                               seconds, scratch)
        limited["cpu_ms"] = (cpu_seconds([worker, proxy.process.pid]) - before) * 1000 / max(1, limited["requests"])
        results["exact_failures"] = exact_requests(base, keys["exact"], n_exact, 16)
        proxy.stop()

        # Streams: two workers, every stream at once.
        results["direct_streams"] = streams(upstream_url, n_streams, None, "bench")
        proxy = start_proxy(port, data_dir, 2, scratch / "proxy-2.log", database)
        workers = proxy.workers()
        stop, peak = threading.Event(), {}
        sampler = threading.Thread(target=sample_rss, args=(workers, stop, peak))
        sampler.start()
        before = cpu_seconds(workers)
        results["proxy_streams"] = streams(base + "/v1", n_streams, keys["streams"], "bench:terse")
        results["stream_cpu_ms"] = (cpu_seconds(workers) - before) * 1000 / n_streams
        stop.set()
        sampler.join()
        results["stream_rss_mib"] = max(peak.values())
        results["revocation_ms"] = revocation_ms(base, keys)
        proxy.stop()  # SIGTERM: pending rows are flushed

        rows, counted = count_rows(data_dir, database)
        results["rows"] = {"exact": (rows.get("exact", 0), n_exact),
                           "streams": (rows.get("streams", 0), n_streams),
                           "wrk": (rows.get("wrk", 0), sum(results[f"proxy_c{c}"]["requests"] for c in (1, 16, 64)))}
        results["stream_usage_counted"] = counted
    finally:
        upstream.stop()
        for proc in ("proxy",):
            if proc in locals():
                locals()[proc].stop()
        shutil.rmtree(scratch, ignore_errors=True)
    return results


def verdict(ok):
    return "yes" if ok else "**no**"


def measures(r):
    """One run's table rows as Markdown: measure | direct | PromptProxy | target | met."""
    d1, p1 = r["direct_c1"], r["proxy_c1"]
    added50, added99 = p1["p50"] - d1["p50"], p1["p99"] - d1["p99"]
    ds, ps = r["direct_streams"], r["proxy_streams"]
    exact_rows, exact_sent = r["rows"]["exact"]
    stream_rows, stream_sent = r["rows"]["streams"]
    wrk_rows, wrk_done = r["rows"]["wrk"]
    lines = [
        f"| c=1 latency p50 / p99 (ms) | {d1['p50']:.2f} / {d1['p99']:.2f} | {p1['p50']:.2f} / {p1['p99']:.2f} | | |",
        f"| added latency p50 / p99, c=1 (ms) | | {added50:.2f} / {added99:.2f} | p50 ≤ 1.0 | {verdict(added50 <= 1.0)} |",
    ]
    for c in (1, 16, 64):
        d, p = r[f"direct_c{c}"], r[f"proxy_c{c}"]
        lines.append(f"| c={c}: req/s, p50 / p99 (ms), errors | {d['rps']:.0f}, {d['p50']:.2f} / {d['p99']:.2f}, "
                     f"{d['errors']} | {p['rps']:.0f}, {p['p50']:.2f} / {p['p99']:.2f}, {p['errors']} | | |")
    cpu = max(r[f"proxy_c{c}"]["cpu_ms"] for c in (1, 16, 64))
    lines += [
        "| proxy CPU per request, c=1 / 16 / 64 (ms) | | " + " / ".join(f"{r[f'proxy_c{c}']['cpu_ms']:.2f}" for c in (1, 16, 64))
        + f" | ≤ 1.0 | {verdict(cpu <= 1.0)} |",
        f"| with all four rate limits checked, c=16: req/s, CPU per request (ms), errors | | "
        f"{r['limited_c16']['rps']:.0f}, {r['limited_c16']['cpu_ms']:.2f}, {r['limited_c16']['errors']} | | |",
        f"| {ps['streams']} streams, 2 workers: errors | {ds['errors']} | {ps['errors']} | 0 | {verdict(ps['errors'] == 0)} |",
        f"| proxy CPU per stream, 22 events relayed (ms) | | {r['stream_cpu_ms']:.2f} | | |",
        f"| time to first chunk p50 / p99 (ms) | {ds['ttfc_p50_ms']:.1f} / {ds['ttfc_p99_ms']:.1f} | "
        f"{ps['ttfc_p50_ms']:.1f} / {ps['ttfc_p99_ms']:.1f} | p99 ≤ direct + 100 | "
        f"{verdict(ps['ttfc_p99_ms'] <= ds['ttfc_p99_ms'] + 100)} |",
        f"| no buffering: first-to-last chunk spread p50 / min (ms; 950 unbuffered) | {ds['spread_p50_ms']:.0f} / "
        f"{ds['spread_min_ms']:.0f} | {ps['spread_p50_ms']:.0f} / {ps['spread_min_ms']:.0f} | min ≥ 800 | "
        f"{verdict(ps['spread_min_ms'] >= 800)} |",
        f"| streams with usage counted in their row | | {r['stream_usage_counted']} / {stream_sent} | all | "
        f"{verdict(r['stream_usage_counted'] == stream_sent)} |",
        f"| revoked key refused by every worker after (ms, 2 workers) | | {r['revocation_ms']:.0f} | ≤ 1000 | "
        f"{verdict(r['revocation_ms'] <= 1000)} |",
        f"| startup to first proxied answer (s) | | {r['startup_s']:.2f} | < 1 | {verdict(r['startup_s'] < 1)} |",
        f"| idle RSS per worker (MiB) | | {r['idle_rss_mib']:.1f} | ≤ 60 | {verdict(r['idle_rss_mib'] <= 60)} |",
        f"| RSS per worker under the stream load (MiB) | | {r['stream_rss_mib']:.1f} | ≤ 150 | "
        f"{verdict(r['stream_rss_mib'] <= 150)} |",
        f"| request rows / requests sent (exact-count run) | | {exact_rows} / {exact_sent} | equal | "
        f"{verdict(exact_rows == exact_sent and r['exact_failures'] == 0)} |",
        f"| request rows / streams sent | | {stream_rows} / {stream_sent} | equal | {verdict(stream_rows == stream_sent)} |",
        f"| request rows / wrk's completed requests (wrk may stop with calls in flight) | | {wrk_rows} / {wrk_done} | ≥ | "
        f"{verdict(wrk_rows >= wrk_done)} |",
    ]
    return lines


def table(runs):
    """The runs {database: results} side by side: one PromptProxy column per
    database, the direct figures of the first run, met only when met on all."""
    names = list(runs)
    header = ["Measure", "Direct"] + [f"PromptProxy, {name}" for name in names] + ["Target", "Met"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    per_run = [[[cell.strip() for cell in line.split("|")[1:-1]] for line in measures(runs[name])]
               for name in names]
    for cells in zip(*per_run):
        measure, direct, _, target, _ = cells[0]
        met = " / ".join(dict.fromkeys(run[4] for run in cells if run[4])) if any(run[4] for run in cells) else ""
        lines.append("| " + " | ".join([measure, direct, *(run[2] for run in cells), target, met]) + " |")
    return "\n".join(lines)


NOTES = """## Reading the numbers

- *CPU per request* is the worker's own user+system time over the requests wrk completed: it does
  not depend on how busy the other processes are, unlike req/s on a shared 2-core machine.
- *Streams*: every stream starts at the same instant. Each stream costs the proxy its set-up (about
  one request's CPU) plus about 0.08 ms per relayed event, so 500 simultaneous streams are
  several hundred milliseconds of CPU for two workers that share two cores with the load client and
  the upstream. The first chunks of the last streams wait for that queue; a single stream's first
  chunk arrives a few milliseconds after direct, and the spread between each stream's first and
  last chunk (about 950 ms, like direct) shows that nothing is buffered.
- *Request rows*: the exact-count runs send a known number of calls and find exactly that many rows
  after a graceful stop.
"""


def versions():
    from importlib.metadata import version

    names = ["flask", "flask-admin", "peewee", "gevent", "gunicorn", "urllib3"]
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split("[")[0].strip()
    return (f"Python {platform.python_version()}, " + ", ".join(f"{n} {version(n)}" for n in names)
            + f", {wrk_version}; {os.cpu_count()} cores")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--out", help="where to write the Markdown (default: docs/benchmarks.md, not with --quick)")
    parser.add_argument("--databases", default="sqlite,postgresql",
                        help="comma-separated: sqlite, postgresql (default: both, side by side)")
    args = parser.parse_args(argv)
    if not shutil.which("wrk"):
        sys.exit("wrk is needed: apt-get install wrk")
    runs = {}
    for name in args.databases.split(","):
        if name == "sqlite":
            runs["SQLite"] = run(args.quick)
        elif name == "postgresql":
            cluster, database = postgresql()
            try:
                runs["PostgreSQL"] = run(args.quick, database)
            finally:
                cluster.stop()
        else:
            sys.exit(f"unknown database {name!r}: sqlite or postgresql")
    text = table(runs)
    print(text)
    out = args.out or (None if args.quick else ROOT / "docs" / "benchmarks.md")
    if out:
        Path(out).write_text(
            f"# Benchmarks\n\n`make bench` on {dt.date.today().isoformat()}: {versions()}.\n"
            "Load tool, upstream and proxy share the machine's cores. PromptProxy runs with a stored prompt "
            "applied and request rows on, under the Docker image's gunicorn command (one gevent worker; two "
            "for the streams). Each column is its own run, on SQLite (the default) and on PostgreSQL on the "
            "same machine.\n\n" + text + "\n\n" + NOTES)
    return runs


if __name__ == "__main__":
    main()
