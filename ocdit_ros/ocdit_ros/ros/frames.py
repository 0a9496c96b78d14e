"""What the node keeps about frames, with no ROS in it: the one-slot hand-off from the image
callback to the worker thread, and the process's memory for /diagnostics."""

from __future__ import annotations

import threading


class LatestFrame:
    """One-slot hand-off: a new frame replaces an unprocessed one (which counts as dropped)."""

    def __init__(self):
        self._cond = threading.Condition()
        self._msg = None
        self.received = 0
        self.dropped = 0
        self.closed = False

    def put(self, msg) -> None:
        with self._cond:
            self.received += 1
            if self._msg is not None:
                self.dropped += 1
            self._msg = msg
            self._cond.notify()

    def take(self, timeout: float = 0.5):
        with self._cond:
            if self._msg is None and not self.closed:
                self._cond.wait(timeout)
            msg, self._msg = self._msg, None
            return msg

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()


def device_memory(device: str) -> dict[str, float]:
    import resource

    out = {"process_max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    if device.startswith("cuda"):
        import torch

        out["gpu_allocated_mb"] = round(torch.cuda.memory_allocated(device) / 2**20, 1)
        out["gpu_max_allocated_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return out
