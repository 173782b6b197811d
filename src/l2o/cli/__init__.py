"""The ``l2o`` command line: one module per command, wired together in :mod:`l2o.cli.main`."""
