"""Reliability tools: crash (SIGKILL) stress, input fuzzing and a soak run. See docs/reliability.md.

Each is a module with a ``main`` (``python -m segdesk.reliability.crash|fuzz|soak``) and a small
function the test suite calls for a quick version. They may import core, ml and qt.
"""
