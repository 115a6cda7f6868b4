"""Local-only tooling (emulators, dev host); never deployed."""
