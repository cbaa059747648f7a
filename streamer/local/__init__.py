"""The local cluster: a coordinator and K workers as processes on this machine.

``LocalCluster`` (``cluster.py``) is what ``streamer run`` (``commands.py``), the
end-to-end tests, the benchmarks and users' own tests start; ``progress.py``
turns job status into the lines ``streamer run`` prints.
"""

from streamer.local.cluster import LocalCluster, Status, all_running

__all__ = ["LocalCluster", "Status", "all_running"]
