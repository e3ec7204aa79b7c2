"""``python -m voxline.cli``: the same as the ``voxline`` command."""

import sys

from voxline.cli.main import main

sys.exit(main())
