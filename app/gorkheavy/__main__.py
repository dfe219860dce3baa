"""``python -m gorkheavy`` runs the ``gorkheavy`` command."""

import sys

from gorkheavy.cli import main

sys.exit(main())
