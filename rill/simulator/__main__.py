"""``python -m rill.simulator``: run the simulator (see :func:`rill.simulator.main`)."""

from .server import main

main()
