"""python -m qfuse_export: the exporter's command line (qfuse-export)."""
import sys

from . import cli

sys.exit(cli())
