"""``python -m lmlab`` (and ``torchrun -m lmlab``) runs the command line."""

import sys

from lmlab.cli import main

sys.exit(main())
