"""The ``minipanda serve`` process: the WSGI app on granian, and the periodic duties on their threads."""
