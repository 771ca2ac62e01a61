"""What the running workers tell everyone else: the agents each serves, on which queues."""

from executus_worker.fleet.directory import AgentDirectory, Directory, WorkerAd

__all__ = ["AgentDirectory", "Directory", "WorkerAd"]
