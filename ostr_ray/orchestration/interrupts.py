"""Ctrl-C and SIGTERM during a launch: stop Tune gracefully once, remember that the launch was interrupted.

Tune's own SIGINT handler stops the run gracefully (it saves the experiment state one last time), but the
caller cannot tell afterwards that ``fit`` returned because of it. So Tune's handler is switched off
(``TUNE_DISABLE_SIGINT_HANDLER``), ours records the signal and asks Tune to stop through the SIGUSR1 handler
Tune always installs while it runs; a second signal stops at once (KeyboardInterrupt). The launch then ends
with an ``interrupted`` report and exit status 128 + the signal (130 for Ctrl-C).
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupts:
    """``with Interrupts() as interrupts: tuner.fit()``; afterwards ``interrupts.signal`` is the first signal."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._saved: dict[int, Any] = {}
        self._env: str | None = None

    def __enter__(self) -> Interrupts:
        if threading.current_thread() is not threading.main_thread():
            return self  # signal handlers can only be set from the main thread; Tune's own apply then
        self._env = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")
        os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
        self._saved = {sig: signal.signal(sig, self._handle) for sig in _SIGNALS}
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._saved.items():
            signal.signal(sig, handler)
        if self._saved:
            if self._env is None:
                os.environ.pop("TUNE_DISABLE_SIGINT_HANDLER", None)
            else:
                os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = self._env

    def _handle(self, signum: int, frame: Any) -> None:
        tune_listens = signal.getsignal(signal.SIGUSR1) not in (signal.SIG_DFL, signal.SIG_IGN, None)
        if self.signal is None and tune_listens:
            self.signal = signum
            os.kill(os.getpid(), signal.SIGUSR1)  # Tune's handler: finish this step, save state, return
            return
        self.signal = self.signal or signum
        raise KeyboardInterrupt

    @property
    def exit_code(self) -> int:
        return 128 + int(self.signal or signal.SIGINT)
