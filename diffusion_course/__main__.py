"""``python -m diffusion_course …`` runs the command line (see ``diffusion_course.cli``)."""

import sys

from .cli import main

sys.exit(main())
