"""The hub alone, no HTTP: what the stream hub costs per event, memory against Redis.

    taskset -c 0 .venv/bin/python bench/hub.py redis://127.0.0.1:6379/0 [streams tokens itl]
    taskset -c 0 .venv/bin/python bench/hub.py memory

``streams`` streams (500) each append one record every ``itl`` s (0.1) until ``tokens``
(100), the last a ``done``, as bench's ``steady`` paces them; each is read by one subscriber
in this process (the Redis hub's local path). Prints the process's CPU seconds and, with
Redis, redis-server's (``INFO cpu``) over the run. Run it on an idle core, alternating the
variants: a run is about ``tokens * itl`` s.
"""

from gevent import monkey

monkey.patch_all()

import resource  # noqa: E402
import secrets  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import gevent  # noqa: E402
import redis  # noqa: E402

from rill.config import DEFAULTS  # noqa: E402
from rill.hub import create  # noqa: E402


def main() -> None:
    url = sys.argv[1]
    streams, tokens, itl = (int(sys.argv[2]), int(sys.argv[3]),
                            float(sys.argv[4])) if len(sys.argv) > 4 else (500, 100, 0.1)
    hub = create({**DEFAULTS, "RILL_REDIS_URL": "" if url == "memory" else url})
    ids = [secrets.token_urlsafe(16) for _ in range(streams)]
    for stream in ids:
        hub.open(stream, None)
    gevent.sleep(0.5)
    received = 0

    def produce(stream: str) -> None:
        gevent.sleep(itl * secrets.randbelow(1000) / 1000)
        for i in range(tokens):
            hub.append(stream, [(i, "done" if i == tokens - 1 else "delta", {"content": "t "})])
            gevent.sleep(itl)

    def subscribe(stream: str) -> None:
        nonlocal received
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

    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu, redis_before, wall = usage.ru_utime + usage.ru_stime, redis_cpu(), time.monotonic()
    gevent.joinall([gevent.spawn(produce, s) for s in ids]
                   + [gevent.spawn(subscribe, s) for s in ids], timeout=tokens * itl + 60)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(f"{url.split(':')[0]}: {received} of {streams * tokens} records, worker "
          f"{usage.ru_utime + usage.ru_stime - cpu:.2f} CPU s, redis-server "
          f"{redis_cpu() - redis_before:.2f} CPU s, {time.monotonic() - wall:.1f} s")
    getattr(hub, "close", lambda: None)()


if __name__ == "__main__":
    main()
