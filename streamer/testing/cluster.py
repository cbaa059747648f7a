"""``LocalCluster`` for tests: re-exported from ``streamer.local.cluster``, where it lives.

``from streamer.testing.cluster import LocalCluster, all_running`` keeps working for
streamer's own tests and for users' test suites.
"""

from streamer.local.cluster import LocalCluster, Status, all_running

__all__ = ["LocalCluster", "Status", "all_running"]
