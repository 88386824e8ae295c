"""``python -m capabilities search-attributes``: the list deploy/temporal/search-attributes.txt holds."""

import sys

from capabilities import search_attributes_file

if sys.argv[1:] != ["search-attributes"]:
    raise SystemExit("usage: python -m capabilities search-attributes")
sys.stdout.write(search_attributes_file())
