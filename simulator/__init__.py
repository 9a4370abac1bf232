"""Simulated on-device agents, a client of the agent protocol (``manage.py simulate_fleet``, ``make run``, the
benchmark's fleet layout). ``agent`` is one agent, ``fleet`` drives many over HTTP. Standard library and orjson
only: no Django, no app, no database (import-linter holds it to that).
"""
