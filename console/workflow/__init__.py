"""What the operator wrote: workflow models, the stage graph, tool parameters, and run submission."""
