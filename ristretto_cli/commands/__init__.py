"""The click commands, one module per verb family; cli.py adds them to the group.

What lives here: the commands (thin: parse flags, call the library, show the result),
the shared options (:mod:`.options`), reading input arrays (:mod:`.files`) and the
terminal module (:mod:`.ui`: rich tables, progress bars, the library's log lines on
stderr). This is the only package that prints.

What it may import: anything of the library; nothing of the library imports it.
"""
