"""The load generator in Python, for machines without Go: same flags, same JSON summary.

One thread per stream (``requests``), so it suits the smoke run's few streams, not the full
scenarios (``bench/run.py`` uses ``main.go`` whenever Go is installed).
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections.abc import Callable
from typing import Any

import requests


def expected(tokens: int) -> str:
    return "".join(f"tok{i} " for i in range(tokens))


def one(args: argparse.Namespace, i: int, want: str, deadline: float) -> dict[str, Any]:
    body = {"messages": [{"role": "user", "content": "Hi"}],
            "model": f"{args.model}&tag={args.tag}-{i}"}
    second: list[threading.Thread] = []
    result: dict[str, Any] = {}

    def on_start(data: dict[str, Any]) -> None:
        url = f"{args.follow}/api/chat/{data['stream_id']}/events"

        def follow() -> None:
            result["follower"] = read("GET", url, {}, want, 0, deadline, None)

        second.append(threading.Thread(target=follow))
        second[-1].start()

    result.update(read("POST", args.url, {"json": body}, want, args.leave_after, deadline,
                       on_start if args.follow else None))
    for thread in second:
        thread.join()
    return result


def read(method: str, url: str, kwargs: dict[str, Any], want: str, leave_after: int,
         deadline: float, on_start: Callable[[dict[str, Any]], None] | None) -> dict[str, Any]:
    """One request's event stream, read as main.go's ``read`` does."""
    result: dict[str, Any] = {"status": 0, "ttft": None, "gaps": [], "done": False,
                              "finish": None, "text": "", "left": None, "err": "",
                              "arrivals": {}}
    sent = time.monotonic()
    try:
        with requests.request(method, url, stream=True, **kwargs,
                              timeout=max(deadline - time.monotonic(), 1)) as response:
            result["status"] = response.status_code
            if response.status_code != 200:
                return result
            event, event_id, data, last, deltas = "", "", [], 0.0, 0
            for line in response.iter_lines(chunk_size=None, decode_unicode=False):
                if line:
                    name, _, value = line.decode().partition(":")
                    value = value[1:] if value.startswith(" ") else value
                    if name == "event":
                        event = value
                    elif name == "id":
                        event_id = value
                    elif name == "data":
                        data.append(value)
                    continue
                if event == "delta":
                    now = time.monotonic()
                    result["text"] += json.loads("\n".join(data))["content"]
                    result["arrivals"][event_id] = now
                    if deltas == 0:
                        result["ttft"] = (now - sent) * 1000
                    else:
                        result["gaps"].append((now - last) * 1000)
                    last, deltas = now, deltas + 1
                    if leave_after and deltas >= leave_after:
                        result["left"] = time.time()
                        break
                elif event == "start" and on_start is not None:
                    on_start(json.loads("\n".join(data)))
                elif event == "done":
                    result["done"] = True
                    result["finish"] = json.loads("\n".join(data))["finish_reason"]
                elif event == "error":  # the stream's last event, as in main.go
                    result["err"] = "error event: " + "\n".join(data)
                    break
                event, data = "", []
                if time.monotonic() > deadline:
                    result["err"] = "deadline"
                    break
    except requests.RequestException as exc:
        result["err"] = type(exc).__name__
    result["exact"] = result["text"] == want or (
        result["left"] is not None and want.startswith(result["text"]))
    return result


def summarize_followers(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The second tabs, summed as main.go's ``summarizeFollowers`` does."""
    tabs = [r.get("follower") for r in results]
    lags = sorted((at - r["arrivals"][key]) * 1000 for r, tab in zip(results, tabs, strict=True)
                  if tab for key, at in tab["arrivals"].items() if key in r["arrivals"])
    statuses: dict[str, int] = {}
    errors: dict[str, int] = {}
    for tab in tabs:
        if tab is None:
            errors["no second tab"] = errors.get("no second tab", 0) + 1
            continue
        statuses[str(tab["status"])] = statuses.get(str(tab["status"]), 0) + 1
        if tab["err"]:
            errors[tab["err"]] = errors.get(tab["err"], 0) + 1
    ok = [t for t in tabs if t and t["done"] and t["finish"] == "stop" and t["status"] == 200]
    return {"streams": len(results), "completed": len(ok), "exact": sum(t["exact"] for t in ok),
            "tokens": sum(t["text"].count("tok") for t in tabs if t), "statuses": statuses,
            "errors": errors, "join_ms": [t["ttft"] for t in tabs if t and t["ttft"] is not None],
            "lag_p50_ms": lags[len(lags) // 2] if lags else 0,
            "lag_p99_ms": lags[min(len(lags) * 99 // 100, len(lags) - 1)] if lags else 0,
            "lag_count": len(lags)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-url", dest="url")
    parser.add_argument("-n", dest="n", type=int, default=1)
    parser.add_argument("-ramp", dest="ramp", type=float, default=0)
    parser.add_argument("-model", dest="model", default="sim")
    parser.add_argument("-tag", dest="tag", default="bench")
    parser.add_argument("-tokens", dest="tokens", type=int, default=20)
    parser.add_argument("-leave-after", dest="leave_after", type=int, default=0)
    parser.add_argument("-deadline", dest="deadline", type=float, default=120)
    parser.add_argument("-follow", dest="follow", default="")
    args = parser.parse_args()
    want, start = expected(args.tokens), time.monotonic()
    deadline = start + args.deadline
    results: list[dict[str, Any]] = [{}] * args.n
    threads = []
    for i in range(args.n):
        time.sleep(max(0.0, start + i / args.n * args.ramp - time.monotonic()))

        def run(i: int = i) -> None:
            results[i] = one(args, i, want, deadline)

        threads.append(threading.Thread(target=run))
        threads[-1].start()
    for thread in threads:
        thread.join()
    gaps = sorted(g for r in results for g in r["gaps"])
    ok = [r for r in results if r["left"] is not None or (
        r["done"] and r["finish"] == "stop" and r["status"] == 200)]
    errors: dict[str, int] = {}
    statuses: dict[str, int] = {}
    for r in results:
        statuses[str(r["status"])] = statuses.get(str(r["status"]), 0) + 1
        if r["err"]:
            errors[r["err"]] = errors.get(r["err"], 0) + 1
    summary = {
        "streams": args.n, "completed": len(ok), "exact": sum(r["exact"] for r in ok),
        "tokens": sum(r["text"].count("tok") for r in results), "statuses": statuses,
        "errors": errors, "ttft_ms": [r["ttft"] for r in results if r["ttft"] is not None],
        "itl_p50_ms": gaps[len(gaps) // 2] if gaps else 0,
        "itl_p99_ms": gaps[min(len(gaps) * 99 // 100, len(gaps) - 1)] if gaps else 0,
        "itl_count": len(gaps), "wall_s": time.monotonic() - start,
        "left": {f"{args.tag}-{i}": r["left"] for i, r in enumerate(results) if r["left"]},
    }
    if args.follow:
        summary["follow"] = summarize_followers(results)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
