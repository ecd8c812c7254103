"""The ``routewise`` command line: a thin adapter over the library.

Every command builds the core object and calls one method on it. Errors from the library
(:class:`~routewise.errors.RoutewiseError`) are printed as one line naming the field and the
reason, with exit code 2.

* :mod:`~routewise.cli.common` — the app, consoles, shared options, opening a store.
* :mod:`~routewise.cli.queries` — ``policy``, ``status``, ``export-trace``, ``health``,
  ``events`` and the operator actions ``pin``, ``quarantine``, ``release``.
* :mod:`~routewise.cli.run` — ``serve``, ``simulate``, ``replay``, ``demo``, ``version``.
* :mod:`~routewise.cli.experiment` — ``experiment …``.
* :mod:`~routewise.cli.migrate` — ``migrate`` (an SQLite store into PostgreSQL).
* :mod:`~routewise.cli.maintenance` — ``check`` (verify a store offline) and ``backup``.

Exit codes: 0 done, 1 a check failed or ``migrate`` was refused, 2 a refusal (a bad option,
a store in use…), 3 the store is corrupt or not a routewise store.
"""

# the import order is the order of the commands in --help
# isort: off
from routewise.cli.common import app, main
from routewise.cli import queries, run, experiment, migrate, maintenance

# isort: on

__all__ = ["app", "experiment", "main", "maintenance", "migrate", "queries", "run"]
