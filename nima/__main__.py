"""`python -m nima ...` is `nima ...` (and `torchrun -m nima run ...` starts training ranks)."""

import sys

from nima.cli import main

sys.exit(main())
