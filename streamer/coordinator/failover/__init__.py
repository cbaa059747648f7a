"""Failover: pure strategies, restart backoff, the handler that turns a failure
into a ``FailoverPlan``, the single-task (individual) protocol, loss accounting
and the failover records. The ``JobMaster`` carries the plans out."""

from streamer.coordinator.failover.handler import FailoverHandler, FailoverPlan, Recovery
from streamer.coordinator.failover.records import FailoverLog, FailoverRecord

__all__ = ["FailoverHandler", "FailoverLog", "FailoverPlan", "FailoverRecord", "Recovery"]
