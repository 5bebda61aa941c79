"""`python -m nncf_wcam.cli ...` (and `torchrun ... -m nncf_wcam.cli ...`)."""

import sys

from nncf_wcam.cli import main

sys.exit(main())
