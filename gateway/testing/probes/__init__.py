"""Reliability probes: what an attacker and a careless operator would try, as code.

Each probe drives a running gateway only through what a peer or an operator has — device
ports (plain and TLS), the management API, its live debug log — plus, when the probe
started the gateway itself, its process id, log file and data directory.  So the same
probes run against a fresh gateway (``scripts/probe``, the default), against one an
operator started (``scripts/probe --data DIR``), and in the test suite in quick form
(``tests/probes``).

Modules:

* :mod:`.target` — the gateway under probe (spawned fresh or found by its ``run.json``),
  the management client, the live debug-log tail, the canary device;
* :mod:`.wire` — raw plain/TLS clients bound to a chosen 127.0.0.x source address;
* :mod:`.mqtt_cases`, :mod:`.http_cases` — the catalogues of malformed input, each case
  with the answer and the debug-log reason it must get; :mod:`.catalogue` runs them;
* :mod:`.checks` — idle-socket cuts, cross-connector tokens, management routes without a
  token, TLS policy; :mod:`.flood` — the handshake flood; :mod:`.leaks` — the secrets scan;
* :mod:`.main` — the command line behind ``scripts/probe``.

Every probe returns a result Struct whose ``ok`` says whether the property held and whose
figures go into docs/reliability.md.  Probes only ever connect to 127.0.0.x.
"""
