import sys

from agebench.cli import main

sys.exit(main())
