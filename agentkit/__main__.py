"""``python3 agent.pyz`` and ``python -m agentkit``: run the agent on stdin/stdout."""

from __future__ import annotations

import sys

from agentkit.agent import main

if __name__ == "__main__":
    sys.exit(main())
