"""The benchmark's peers: what a user would write instead of Rill, the way their community does."""
