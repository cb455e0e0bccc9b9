"""Run the clipapp web app: `python app.py [flags]`, the same as `clipapp serve [flags]` (see clipapp/app/serve.py)."""

import sys

from clipapp.app.serve import main, parse_args, parse_auth  # noqa: F401 - parse_args/parse_auth: tests and scripts use them

if __name__ == "__main__":
    sys.exit(main())
