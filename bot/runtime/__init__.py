"""Running the product: the RQ queue with its relay and sweeper, the worker process,
the ``portineria`` CLI and the embedded development stack."""
