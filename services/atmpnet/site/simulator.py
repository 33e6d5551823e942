"""The network simulator's public face; the parts live in ``atmpnet.site.simulation``.

The star import re-exports exactly ``atmpnet.site.simulation.__all__``: the list is kept once.
"""

from atmpnet.site.simulation import *  # noqa: F403
