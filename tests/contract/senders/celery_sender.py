"""A service that knows nothing of executus_worker, only Celery: it reads the published schema's
``x-executus`` block, sends one run as it says and waits for the run's result.

Run by the contract tests with the Python of a virtualenv holding only celery and redis.
Usage: celery_sender.py SCHEMA_JSON BROKER_URL RUN_ID REQUEST_JSON -> one JSON line on stdout.
"""

import json
import sys

from celery import Celery


def main() -> None:
    schema_path, broker, run_id, request = sys.argv[1:5]
    with open(schema_path) as f:
        contract = json.load(f)["x-executus"]
    assert contract["args"] == ["run_id", "request"], contract["args"]
    app = Celery("sender", broker=broker, backend=broker)
    result = app.send_task(
        contract["task"], args=[run_id, request], queue=contract["queue"], task_id=run_id
    )
    try:
        value = result.get(timeout=120)
    except Exception as exc:
        print(json.dumps({"state": result.state, "error": type(exc).__name__, "message": str(exc)}))
    else:
        print(json.dumps({"state": result.state, "result": value}))


if __name__ == "__main__":
    main()
