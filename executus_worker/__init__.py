"""executus_worker: durable LLM-agent runs on Celery + Redis.

Importing this package has no side effects: no connections, threads, signal handlers or
environment reads. The Celery app for ``celery -A executus_worker.worker`` is built lazily.
"""

__version__ = "0.1.0"
