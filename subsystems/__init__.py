"""The subsystem packages. The host imports one only when it is enabled."""
