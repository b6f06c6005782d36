"""`python -m trustix_p2p` is the `trustix-p2p` command."""

import sys

from trustix_p2p.cli import main

sys.exit(main())
