"""The ``modelpack`` command line: click for parsing, rich for output, nothing else.

Installed as the ``modelpack_cli`` package; every command is a thin wrapper
over one function of the ``modelpack`` library.
"""
