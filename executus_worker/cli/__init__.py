"""The ``executus-worker`` console script: one module per command group.

app.py        the top-level group and the table of commands (imported when used)
common.py     settings, the Redis client, expected errors as one-line messages
output.py     how runs are printed: text, tables, JSON
processes.py  worker, beat: exec into Celery
dev.py        dev: Redis + worker + beat in one foreground command
runs.py       enqueue, status, runs, cancel, recover, schema
agents.py     agents: which live worker serves which agent
api.py        api: the HTTP API (executus_worker.api) on uvicorn
check.py      check: is this deployment fit to hold runs?
health.py     health: the liveness probe (reads the worker's heartbeat file, nothing else)
demo.py       demo: the whole story, live
schedules.py  schedules: cron jobs in the file and in Redis
"""

from executus_worker.cli.app import main

__all__ = ["main"]
