"""The face: the ``skiff`` command (main.py), the client for a running stack (client.py), the
demo (demo.py) and the tables they print (tables.py).
"""
