"""The boxes: the fleet of agent links, the JSON-lines protocol, the inventory, and SSH."""
