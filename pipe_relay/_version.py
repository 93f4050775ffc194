# The package version, in one place (read by hatchling at build time and by the code at run time).
# Invariant: a plain string literal, so the build backend can read it without importing anything.
__version__ = "0.1.0"
