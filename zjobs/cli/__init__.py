"""The ``zjobs`` command line: a thin click layer over the library.

:mod:`zjobs.cli.app` holds the group and what every command shares; each command family
has its module, and the commands are registered on the group here, in one place.
"""

from zjobs.cli import calls, observe, serve, system, tools
from zjobs.cli.app import main

for command in (serve.serve, serve.serve_settings, serve.link, calls.send, calls.ping,
                calls.listen, system.up, observe.status, observe.top, observe.dashboard,
                tools.keygen, tools.bench, tools.demo):
    main.add_command(command)

__all__ = ["main"]
