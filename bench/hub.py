"""The hub alone, no HTTP: what the stream hub costs per event, memory against Redis.

    taskset -c 0 .venv/bin/python bench/hub.py redis://127.0.0.1:6379/0 [streams tokens itl]
    taskset -c 0 .venv/bin/python bench/hub.py memory
    taskset -c 0 .venv/bin/python bench/hub.py redis://127.0.0.1:6379/0 --remote

``streams`` streams (500) each append one record every ``itl`` s (0.1) until ``tokens``
(100), the last a ``done``, as bench's ``steady`` paces them; each is read by one subscriber
in this process (the Redis hub's local path). With ``--remote`` a second process (a worker of
its own) produces them and the subscribers here read them from Redis, woken by its flush
notices: the path of a subscriber on another worker or instance (a second tab, a resume).
``--remote --followed=N``: subscribers to N of the streams only. Prints each process's CPU
seconds and, with Redis, redis-server's (``INFO cpu``) over the run. Run it on an idle core,
alternating the variants: a run is about ``tokens * itl`` s.
"""

from gevent import monkey

monkey.patch_all()

import resource  # noqa: E402
import secrets  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import gevent  # noqa: E402
import redis  # noqa: E402

from rill.config import DEFAULTS  # noqa: E402
from rill.hub import create  # noqa: E402

START_SECONDS = 2.0  # from opening the streams to their first tokens: room to subscribe


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def produce(hub: object, ids: list[str], tokens: int, itl: float) -> None:
    """Each stream of ``ids`` appends ``tokens`` records ``itl`` s apart, starting at a
    random point of the first ``itl``; record 0 (``start``) goes at once."""

    def one(stream: str) -> None:
        gevent.sleep(START_SECONDS + itl * secrets.randbelow(1000) / 1000)
        for i in range(1, tokens):
            hub.append(stream, [(i, "done" if i == tokens - 1 else "delta", {"content": "t "})])
            gevent.sleep(itl)

    for stream in ids:
        hub.open(stream, None)
        hub.append(stream, [(0, "start", {})])
    return [gevent.spawn(one, s) for s in ids]


def main() -> None:
    url, *rest = sys.argv[1:]
    flags = {a for a in rest if a.startswith("--")}
    rest = [a for a in rest if a not in flags]
    remote = "--remote" in flags
    # --followed=N: the second process subscribes to N of the streams only (a worker where
    # a few tabs follow streams of another).
    followed = next((int(f.split("=")[1]) for f in flags if f.startswith("--followed=")), 0)
    streams, tokens, itl = (int(rest[0]), int(rest[1]), float(rest[2])) if rest else (500, 100, 0.1)
    hub = create({**DEFAULTS, "RILL_REDIS_URL": "" if url == "memory" else url})
    if "--producer" in flags:  # the second process of --remote
        ids = sys.stdin.readline().split()
        cpu_before = cpu()
        gevent.joinall(produce(hub, ids, tokens, itl), timeout=tokens * itl + 60)
        gevent.sleep(0.5)  # the last flush
        print(f"{cpu() - cpu_before:.2f}", flush=True)
        hub.close()
        return
    ids = [secrets.token_urlsafe(16) for _ in range(streams)]
    producer = None
    if remote:
        producer = subprocess.Popen(
            [sys.executable, __file__, url, str(streams), str(tokens), str(itl), "--producer"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        producer.stdin.write(" ".join(ids) + "\n")
        producer.stdin.flush()
        gevent.sleep(START_SECONDS / 2)  # its streams are open and in Redis
        producing = []
    else:
        producing = produce(hub, ids, tokens, itl)
    received = 0

    def subscribe(stream: str) -> None:
        nonlocal received
        hub.join(stream, "bench")
        after = -1
        while True:
            for record in hub.read(stream, after, 1.0, 256):
                received += 1
                after = record[0]
                if record[1] == "done":
                    return

    def redis_cpu() -> float:
        if url == "memory":
            return 0.0
        with redis.Redis.from_url(url) as client:
            info = client.info("cpu")
        return float(info["used_cpu_sys"] + info["used_cpu_user"])

    cpu_before, redis_before, wall = cpu(), redis_cpu(), time.monotonic()
    read = ids[:followed] if remote and followed else ids
    gevent.joinall(producing + [gevent.spawn(subscribe, s) for s in read],
                   timeout=START_SECONDS + tokens * itl + 60)
    subscribers = cpu() - cpu_before
    line = (f"{url.split(':')[0]}{' --remote' if remote else ''}: {received} of "
            f"{len(read) * tokens} records, ")
    if producer is not None:
        producer_cpu = float(producer.communicate(timeout=60)[0].strip() or "nan")
        line += (f"subscribers' process {subscribers:.2f} CPU s, producer's process "
                 f"{producer_cpu:.2f} CPU s, ")
    else:
        line += f"worker {subscribers:.2f} CPU s, "
    print(f"{line}redis-server {redis_cpu() - redis_before:.2f} CPU s, "
          f"{time.monotonic() - wall:.1f} s")
    getattr(hub, "close", lambda: None)()


if __name__ == "__main__":
    main()
