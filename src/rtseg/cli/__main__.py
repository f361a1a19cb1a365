import sys

from rtseg.cli.main import main

sys.exit(main())
