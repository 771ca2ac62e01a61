"""Celery beat scheduler for executus_worker: scheduled jobs and the recovery sweep."""
