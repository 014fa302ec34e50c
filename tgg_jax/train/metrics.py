"""What a run reports: FLOPs and MFU estimates, TensorBoard event files, a progress line with ETA."""

from __future__ import annotations

import math
import os
import sys
import time

import jax

# Dense bf16 peak FLOP/s per device, for MFU. Unknown kinds (CPU) report MFU as NaN unless the
# config gives `peak_flops_per_device`.
PEAK_FLOPS = {
    "H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12,
    "TPU v4": 275e12, "TPU v5 lite": 197e12, "TPU v5e": 197e12, "TPU v5p": 459e12, "TPU v6": 918e12,
}


def peak_flops_per_device(override: float = 0.0) -> float:
    if override > 0:
        return override
    kind = jax.devices()[0].device_kind
    for name, flops in PEAK_FLOPS.items():
        if name.lower() in kind.lower():
            return flops
    return math.nan


def train_flops_per_step(counts: dict[str, int], llm_tokens: int, images: int, image_patches: int) -> float:
    """6·N_llm per LLM token (+ projector) for forward and backward, plus the frozen towers'
    forward pass (2·N per patch token) for every image and object crop in the step."""
    llm = 6.0 * (counts["llm"] + counts["projector"]) * llm_tokens
    towers = 2.0 * (counts["clip"] + counts["dinov2"]) * image_patches * images
    return llm + towers


class Reporter:
    """TensorBoard scalars (process 0) and a one-line progress report on stdout."""

    def __init__(self, workdir: str, total_steps: int, enabled: bool = True):
        self.total_steps = total_steps
        self.enabled = enabled and jax.process_index() == 0
        self.writer = None
        if self.enabled:
            from tensorboardX import SummaryWriter
            self.writer = SummaryWriter(os.path.join(workdir, "tensorboard"))
        self._t0 = time.time()
        self._step0 = None

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if not self.writer:
            return
        for k, v in values.items():
            if math.isfinite(float(v)):  # MFU is NaN where the peak is unknown (CPU)
                self.writer.add_scalar(k, float(v), step)
        self.writer.flush()

    def progress(self, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        now = time.time()
        if self._step0 is None:
            self._step0, self._t0 = step, now
        done = step - self._step0
        rate = done / max(now - self._t0, 1e-9)
        eta = (self.total_steps - step) / rate if rate > 0 else math.inf
        shown = " ".join(f"{k}={_fmt(v)}" for k, v in values.items())
        print(f"[step {step}/{self.total_steps} {100 * step / max(self.total_steps, 1):5.1f}%] {shown} "
              f"| {rate:.2f} steps/s ETA {_duration(eta)}", flush=True, file=sys.stdout)

    def close(self) -> None:
        if self.writer:
            self.writer.close()


def _fmt(v: float) -> str:
    v = float(v)
    if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e5):
        return f"{v:.3e}"
    return f"{v:.4f}"


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
