"""``python -m apt``: see :mod:`apt.cli`."""

from apt.cli import main

raise SystemExit(main())
