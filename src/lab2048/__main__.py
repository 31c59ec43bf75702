import sys

from lab2048.cli import main

sys.exit(main())
