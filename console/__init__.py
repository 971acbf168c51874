"""fleetscan operator side: CLI, Textual console, and the embedded master.

The core (store, planner, scheduler, fleet, transports) never imports Textual;
``tests/test_layering.py`` proves it.
"""

__version__ = "0.1.0"
