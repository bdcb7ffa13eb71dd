import sys

from dermgen.cli import main

sys.exit(main())
