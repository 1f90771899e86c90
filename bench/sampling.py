"""Sampling latency: GET /jobs/{id}/samples (a 64-digit PNG grid) under load, against a running
API, from a load generator in another process (wrk: ``apt-get install wrk``).

    python -m bench.sampling --data ../shared/data/mnist              # starts its own service
    python -m bench.sampling --url http://127.0.0.1:8000 --job ID     # or load a running one

Without ``--url`` it starts the embedded service (``gan serve --processes P`` and one worker, in
a temporary folder), trains a ``classic`` job for 300 steps, then stops the worker so that
nothing else uses the CPU. Each level of concurrency is ``--seconds`` seconds of wrk with that
many connections (closed loop: each sends its next request when the previous one is answered) on
one wrk thread, after a short warm-up. Two kinds of load:

- ``distinct``: every request asks for another seed, so every one is generated;
- ``same``: every request is the same (a dashboard's many viewers of one grid).

Latency is measured by wrk, at the client: p50, p99 and the requests answered per second; a
non-200 answer or a socket error counts as an error.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

LEVELS = (1, 16, 64)

# wrk's Lua: a distinct seed per request (or always the same), and a JSON summary at the end.
WRK_SCRIPT = """
local same = %(same)s
local counter = 0
request = function()
  counter = counter + 1
  local seed = same and 7 or (1000000 + counter)
  return wrk.format("GET", "%(path)s?n=64&seed=" .. seed)
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %%d, "errors": %%d, "seconds": %%f, ' ..
    '"p50_ms": %%f, "p99_ms": %%f, "mean_ms": %%f}\\n',
    summary.requests, e.connect + e.read + e.write + e.status + e.timeout,
    summary.duration / 1e6, latency:percentile(50) / 1e3, latency:percentile(99) / 1e3,
    latency.mean / 1e3))
end
"""


def load(url: str, clients: int, seconds: float, same: bool) -> dict[str, Any]:
    """wrk with ``clients`` connections for ``seconds`` (after a warm-up of a fifth of that)."""
    base, _, path = url.partition("/jobs/")
    script = Path(tempfile.mkstemp(suffix=".lua")[1])
    script.write_text(WRK_SCRIPT % {"same": "true" if same else "false", "path": "/jobs/" + path})
    command = ["wrk", "-t1", f"-c{clients}", "--timeout", "10s", "-s", str(script), base]
    subprocess.run([*command, f"-d{max(1, round(seconds / 5))}s"], capture_output=True, check=True)
    out = subprocess.run([*command, f"-d{round(seconds)}s"], capture_output=True, text=True,
                         check=True).stdout  # fmt: skip
    script.unlink()
    row = json.loads(out.strip().splitlines()[-1])
    return {"clients": clients, "load": "same" if same else "distinct",
            "rps": row["requests"] / row["seconds"], **row}  # fmt: skip


def own_service(data_dir: Path, processes: int) -> tuple[Any, str]:
    """The embedded service in a temporary folder, with a trained classic job; (service, URL
    of the job's samples). The worker is stopped once the job has succeeded."""
    from harness.services import Service, wait_for

    folder = Path(tempfile.mkdtemp(prefix="bench-sampling-"))
    service = Service(folder, {"GAN_DATA_DIR": str(data_dir.resolve())})
    service.serve("--no-worker", "--processes", str(processes))
    worker = service.start("worker")
    spec = {"preset": "classic", "max_steps": 300, "checkpoint_every": 300, "eval_every": 0}
    job_id = service.submit(spec)
    wait_for(lambda: service.job(job_id)["state"] == "succeeded", 300, "the job", every=0.5)
    worker.terminate()
    worker.wait(timeout=60)
    return service, f"{service.url}/jobs/{job_id}/samples"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, help="MNIST IDX folder, to start a service")
    parser.add_argument("--url", help="a running API instead")
    parser.add_argument("--job", help="with --url: the job to sample")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--processes", type=int, default=1, help="API processes to start")
    parser.add_argument("--levels", type=int, nargs="+", default=list(LEVELS))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        parser.error("wrk is not installed (apt-get install wrk)")
    service = None
    if args.url:
        url = f"{args.url.rstrip('/')}/jobs/{args.job}/samples"
    else:
        if args.data is None:
            parser.error("give --data (to start a service) or --url and --job")
        service, url = own_service(args.data, args.processes)
    try:
        rows = []
        for same in (False, True):
            for clients in args.levels:
                row = load(url, clients, args.seconds, same)
                rows.append(row)
                print(json.dumps(row), flush=True)
    finally:
        if service is not None:
            service.stop()
    print("\n| load | clients | requests/s | p50 ms | p99 ms | errors |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['load']} | {r['clients']} | {r['rps']:,.0f} | {r['p50_ms']:.1f} "
              f"| {r['p99_ms']:.1f} | {r['errors']} |")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
