"""What the gateway keeps between requests: the home of state its parts share.

``access`` (a client's Authorization -> its own registry client; a credential check kept
30 s), ``ttlmap`` (size- and age-capped maps for what clients make the gateway remember),
``metrics`` (the counters of ``/metrics``), ``spools`` (work folders claimed by a flock,
swept when their process died), ``shared`` (upload tickets, Xet sessions and scopes,
published chunk ranges and branch locks: in this process, or in Redis for replicas).
"""
