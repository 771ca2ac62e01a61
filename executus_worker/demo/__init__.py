"""The demo: the whole story live with real processes (``story``), or the kernel in-process.

story.py      workers, beat, faults and the live view; the end-of-run verdict
processes.py  the children it starts, stopped by pid and named by pid
agents.py     the demo agents with a step trace (owner and time of every step)
verdict.py    exact transcripts and one owner at a time, checked from that trace
resolve.py    which Redis: given, configured, local or embedded
inprocess.py  ``demo --in-process``: the run kernel alone, its checkpoint keys shown
"""

from executus_worker.demo.inprocess import run_demo
from executus_worker.demo.run import run_story

__all__ = ["run_demo", "run_story"]
