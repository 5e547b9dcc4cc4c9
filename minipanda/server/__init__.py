"""The ``minipanda serve`` process: the WSGI app on waitress, and the periodic duties on their threads."""
