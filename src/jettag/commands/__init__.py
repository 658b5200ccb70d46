"""One module per ``jettag`` subcommand; see ``jettag.cli``."""
