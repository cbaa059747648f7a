"""Waits the end-to-end tests share (a cluster, a job and its checkpoints)."""

from __future__ import annotations

from streamer.testing.cluster import LocalCluster, Status


def completed_checkpoints(status: Status) -> int:
    return int(status["checkpoints"]["completed"])


def more_checkpoints(cluster: LocalCluster, job_id: str, n: int) -> Status:
    """Wait until ``n`` more checkpoints completed than now; returns that status."""
    start = completed_checkpoints(cluster.status(job_id))
    return cluster.wait_for(
        job_id, lambda s: completed_checkpoints(s) >= start + n, what=f"{n} more checkpoints"
    )
