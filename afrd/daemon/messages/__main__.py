"""``python -m afrd.daemon.messages --write docs/schemas`` (or ``--check``): the JSON Schema
files from the models (afrd.daemon.messages.schemas)."""

import sys

from afrd.daemon.messages.schemas import main

sys.exit(main())
