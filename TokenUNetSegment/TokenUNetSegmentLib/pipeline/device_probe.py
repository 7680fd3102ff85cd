"""Which devices this computer offers, asked of a child process so the caller never imports torch.

``python -m TokenUNetSegmentLib.pipeline.device_probe`` prints one JSON list such as
``["auto", "cpu", "cuda", "cuda:0", "cuda:1"]``. The Slicer module starts it when its panel opens and reads
the answer when it arrives (importing torch takes seconds and may fail; neither should block or break the GUI).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from .process_tree import popen_options


def available_devices() -> list[str]:
    """``auto``, ``cpu``, then ``cuda`` and ``cuda:N`` per CUDA GPU, then ``mps`` when present."""
    import torch

    devices = ["auto", "cpu"]
    if torch.cuda.is_available():
        devices += ["cuda", *(f"cuda:{i}" for i in range(torch.cuda.device_count()))]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices.append("mps")
    return devices


def resolved(devices: list[str], requested: str) -> str:
    """What ``requested`` becomes given the available ``devices`` (``auto``: cuda, then mps, then cpu)."""
    if requested != "auto":
        return requested
    return next((d for d in ("cuda", "mps") if d in devices), "cpu")


class DeviceProbe:
    """The probe as a child process: :meth:`poll` returns the device list once it has answered (or failed)."""

    def __init__(self, python: str = sys.executable, env: dict | None = None, cwd: str | None = None):
        cwd = cwd or str(Path(__file__).resolve().parents[2])  # the folder that holds TokenUNetSegmentLib
        self.devices: list[str] | None = None
        try:
            self.process = subprocess.Popen(
                [python, "-m", "TokenUNetSegmentLib.pipeline.device_probe"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
                env=env,
                cwd=cwd,
                **popen_options(),
            )
        except OSError:
            self.process, self.devices = None, ["auto", "cpu"]

    def poll(self) -> list[str] | None:
        """The devices, or None while the child is still working (a failed probe answers auto and cpu)."""
        if self.devices is None and self.process.poll() is not None:
            try:
                answer = json.loads(self.process.stdout.read() or "null")
            except ValueError:
                answer = None
            self.process.stdout.close()
            ok = isinstance(answer, list) and all(isinstance(d, str) for d in answer)
            self.devices = answer if ok else ["auto", "cpu"]
        return self.devices


if __name__ == "__main__":
    print(json.dumps(available_devices()))
