"""Test helpers shipped with the plugin (simulated IMOD folders), so that they are available to
the protocols' child processes and to `scipion3 tests` as well as to the repository's pytest."""
