"""`make bench`: speed and memory side by side with a peer, printed as JSON lines."""
