"""`python -m trustix_p2p.nix COMMAND`: the builder's commands without the rest of the CLI.

See `trustix_p2p.nix.cli`; `trustix-p2p-nix-hook` is the hook's own program.
"""

import sys

from trustix_p2p.nix.cli import main

sys.exit(main())
