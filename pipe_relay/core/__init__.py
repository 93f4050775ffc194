# The sans-IO core: paths, routing, registry, header policy, framing, forms, replies, status lines, quotas.
# Invariant: nothing here imports trio or sockets, reads a clock, or does I/O; callers import the modules.
