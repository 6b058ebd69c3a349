"""The strategy loop: lock, supervisor, reconcile and the loop itself."""
