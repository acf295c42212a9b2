"""What the screenshot scripts share: waiting on the window while Qt runs."""

import time


def wait(app, condition, seconds):
    """Run Qt's events until ``condition()`` holds or ``seconds`` pass; its last value."""
    end = time.monotonic() + seconds
    while not condition() and time.monotonic() < end:
        app.processEvents()
        time.sleep(0.01)
    return condition()


def settle(app, turns: int = 20) -> None:
    """Let pending paints and layout finish before a grab."""
    for _ in range(turns):
        app.processEvents()
