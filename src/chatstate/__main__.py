"""``python -m chatstate``: the same as the ``chatstate`` command."""

from chatstate.cli.main import main

raise SystemExit(main())
