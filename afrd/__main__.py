import sys

from afrd.cli import main

sys.exit(main())
