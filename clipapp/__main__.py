import sys

from clipapp.cli import main

sys.exit(main())
