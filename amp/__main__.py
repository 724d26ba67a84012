"""`python -m amp`: the amp-toolkit command line (`amp.cli`)."""
import sys

from amp.cli import main

sys.exit(main())
