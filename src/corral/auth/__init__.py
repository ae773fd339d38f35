"""Identities, roles and namespaces (issue 11): who the caller is, and what it may do.

``identity.py`` is pure (the roles and what each may do); ``passwords.py``, ``keys.py`` and ``tokens.py``
make and check credentials; ``rules.py`` gives every route of the app the permission it needs;
``middleware.py`` resolves the caller of every request to an ``Identity`` on ``request.state.identity``
(``scope["state"]["identity"]``), which the routers, the audit log and the other parts read.
"""
