"""The progress protocol the job writes and the local executor reads."""

from __future__ import annotations

import io

from training import progress


def test_an_emitted_event_parses_back() -> None:
    stream = io.StringIO()
    progress.emit("epoch", stream=stream, epoch=2, epochs=5, loss=0.25)
    assert progress.parse(stream.getvalue()) == {"event": "epoch", "epoch": 2, "epochs": 5, "loss": 0.25}


def test_other_log_lines_are_not_events() -> None:
    assert progress.parse("2026-12-02 INFO training.loop: training on cpu") is None
