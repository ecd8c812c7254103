"""``python -m routewise.cli``."""

from routewise.cli.common import main

main()
