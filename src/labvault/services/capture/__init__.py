"""What a run records without any code: git state, environment, seeds, the process itself.

Capture never breaks a run: each function returns what it could learn plus warnings.
"""
