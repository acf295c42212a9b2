"""The model half of segdesk: torch + torchvision, no Qt.

OpenMP threads that spin while waiting for work steal the core the GUI (and the other worker)
needs; passive waiting is set before torch is first imported, unless the user chose otherwise.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
