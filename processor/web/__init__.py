"""Access to the worker's HTTP API: API tokens (`tokens.py`) and the check every view runs (`auth.py`)."""
