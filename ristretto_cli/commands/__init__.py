"""Click commands, one module per verb family; cli.py adds them to the group."""
