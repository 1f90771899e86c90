"""The job store down under the API's clients (the scenario of harness/store_outage.py, which
says what it counts), on a PostgreSQL and a Redis of its own and `gan serve --no-worker`:

    python -m bench.store_outage --data ../shared/data/mnist                 # 8 clients, 10 s
    python -m bench.store_outage --data DIR --clients 2 --down 3             # the size CI runs

Prints one JSON object (and writes it to ``--json``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from harness.postgres import PostgresServer
from harness.services import RedisServer, Service
from harness.store_outage import outage_scenario


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--down", type=float, default=10.0, help="seconds PostgreSQL is down")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-store-outage-"))
    postgres, broker = PostgresServer(), RedisServer(folder)
    service = Service(
        folder,
        {"GAN_DATA_DIR": str(args.data.resolve()), "GAN_DATABASE_URL": postgres.url,
         "GAN_BROKER_URL": broker.url},
    )  # fmt: skip
    try:
        postgres.start()
        broker.start()
        service.serve("--no-worker")
        result = outage_scenario(
            service, postgres, clients=args.clients, before_s=2.0, down_s=args.down, after_s=3.0
        )
    finally:
        service.stop()
        broker.stop()
        postgres.close()
        shutil.rmtree(folder, ignore_errors=True)
    print(json.dumps(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
