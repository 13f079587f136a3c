"""Watching the discriminator's accuracy for saturation (the reward carries no gradient) or no signal."""

from __future__ import annotations

from collections import deque
from typing import Optional

from llmgan.errors import LlmganError


class SaturationStop(LlmganError):
    """The discriminator's accuracy sat above saturation_high (reward saturated) or below saturation_low
    (no signal) for a whole window, and reward.stop_on_saturation is set."""


class SaturationWatcher:
    """Window of the last `window` discriminator accuracies; reports when all of them sit above `high`
    (saturated: the reward carries no gradient) or below `low` (D has no signal).

    `update(acc)` returns 'high' or 'low' on the step a streak first fills the window, else None, so
    a long streak warns once; it re-arms when the streak breaks.
    """

    def __init__(self, window: int, high: float, low: float):
        self.window, self.high, self.low = window, high, low
        self.values: deque = deque(maxlen=max(1, window))
        self.active: Optional[str] = None

    def update(self, accuracy: float) -> Optional[str]:
        self.values.append(float(accuracy))
        state = None
        if self.window > 0 and len(self.values) == self.window:
            if all(v > self.high for v in self.values):
                state = "high"
            elif all(v < self.low for v in self.values):
                state = "low"
        fired = state if state is not None and state != self.active else None
        self.active = state
        return fired

    def state_dict(self) -> dict:
        return {"values": list(self.values), "active": self.active}

    def load_state_dict(self, state: dict) -> None:
        self.values = deque((float(v) for v in state["values"]), maxlen=max(1, self.window))
        self.active = state.get("active")
