"""The platform from a notebook: a small synchronous client.

>>> from services.sdk import Client
>>> client = Client()  # doctest: +SKIP

``Client()`` takes its addresses and token from the MLOPS_* variables, else from the
local stack `mlops up` runs. It registers a model object or file with an inferred signature, sets aliases, reads
lineage and training runs, and asks serving for predictions (numpy in, numpy out). The
README has a worked example; :class:`~services.sdk.client.Client` documents each call.
"""

from services.sdk.client import Client, Registered

__all__ = ["Client", "Registered"]
