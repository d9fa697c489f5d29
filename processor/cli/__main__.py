"""`python -m processor.cli ARGS`: the `ccmeter` command."""

import sys

from processor.cli import main

sys.exit(main())
