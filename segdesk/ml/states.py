"""Training states in words, as the training panel shows them. No torch here: the GUI imports it."""

WAITING = "waiting for labels"
TRAINING = "training"
IMPROVED = "improved"
STOPPED = "stopped"
ERROR = "error"
