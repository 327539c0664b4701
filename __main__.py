"""`python -m npa`: the `npa` command."""
from npa.cli import main

main()
