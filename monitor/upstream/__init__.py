"""upstream: see the module docstrings.

httpx imports its own command-line client whenever click, Pygments and rich are installed (as
they are beside the dev tools): 60-100 ms of every command's start-up, for a client this package
never runs. Marked absent here, before ``client`` first imports httpx, httpx keeps its stub
``httpx.main`` (which says to install ``httpx[cli]``) and loads none of the three.
"""

import sys

sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
