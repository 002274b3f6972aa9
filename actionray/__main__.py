import sys

from actionray.cli import main

sys.exit(main())
