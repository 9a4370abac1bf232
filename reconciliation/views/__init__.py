"""The fleet page (``fleet``, routed by ``reconciliation.urls``) and its SVG charts (``charts``)."""
