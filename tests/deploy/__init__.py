# End-to-end tests of deploy/: pipe-relay hosts in network namespaces behind HAProxy and nginx.
# Invariant: nothing here runs unless the namespaces and the proxies can be made; what is made is removed.
