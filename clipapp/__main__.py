import sys

from clipapp.app.cli import main

sys.exit(main())
