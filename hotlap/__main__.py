"""`python -m hotlap ...` is the `hotlap` command."""

import sys

from hotlap.cli import main

sys.exit(main())
