"""`make bench`: modelpack against skopeo and the Python peers, in one run, on this machine."""
