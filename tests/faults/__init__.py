"""Crash and fault-injection harness (SECURITY.md (b), T1 and T3-T6).

``harness``: the relay under test, load clients with durable journals, the killer.
``checker``: compares the journals (ground truth) with what the relay finally holds.
``scenarios``: each scenario as one coroutine returning its JSON summary; the pytest files
run bounded versions, ``run_long`` the long ones.
"""
