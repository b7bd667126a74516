"""End-to-end scenarios, in the style of Trove's scenario tests.

``groups.py`` declares the scenario groups (``instance_create``,
``database_actions``, ``user_actions``, ``root_actions``,
``configuration``, ``backup``, ``replication``, ``instance_delete``),
their steps and dependencies; ``runners/`` holds one runner per group;
``helpers/`` the datastore helper (``CouchDBHelper``); ``control_plane.py``
the guest calls Trove 26's taskmanager makes for each user action;
``engine.py`` runs groups and names the step that failed.

Everything runs against real services started on loopback (RabbitMQ,
Swift, one CouchDB server per instance: a real CouchDB 3.5 node or
pouchdb-server for the 1.6 API, one real agent per instance),
driven through ``trove/guestagent/api.py`` and observed through the
conductor listener.  ``integration/test_scenarios.py`` runs each group
alone (with the groups it depends on) and all of them together::

    tools/run-tests integration/test_scenarios.py              # everything
    tools/run-tests integration/test_scenarios.py -k together
    tools/run-tests integration/test_scenarios.py -k 'alone and backup'
    tools/run-tests integration/test_scenarios.py \\
        --scenario-group backup --scenario-group replication
"""
