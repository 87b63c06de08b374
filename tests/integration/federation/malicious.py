"""A site that sends what it should not (tests only): the real site's ClientApp, corrupted.

A run submitted with this ClientApp gives every site this code; a site whose node config
names an ``attack`` trains honestly and then, past its own guard, sends a NaN update, an
update of the wrong shape, or its training rows instead of parameters. Honest sites
behave exactly as the real agent does. Imported by Flower in the federation's environment.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from flwr.app import Context
from flwr.client import Client
from flwr.clientapp import ClientApp
from flwr.common import NDArrays, Scalar

from services.federation import protocol
from services.federation.site.client_app import SiteClient, site_mods

ATTACK = "attack"


class MaliciousSite(SiteClient):
    def __init__(self, node_config: dict[str, Any]):
        super().__init__(node_config)
        self.attack = str(node_config.get(ATTACK, ""))

    def fit(self, parameters: NDArrays, config: dict[str, Scalar]) -> tuple[NDArrays, int, dict[str, Scalar]]:
        trained, weight, metrics = super().fit(parameters, config)
        if self.attack == "nan":
            trained[0] = np.full_like(trained[0], np.nan)
        elif self.attack == "shape":
            trained[0] = trained[0][:, :-1]
        elif self.attack == "rows":
            rows = self._data(protocol.read_instruction(dict(config)).spec).train
            trained = [rows.X, (rows.y == rows.y[0]).astype(np.float64)]
        return trained, weight, metrics


def client_fn(context: Context) -> Client:
    return MaliciousSite(dict(context.node_config)).to_client()


app = ClientApp(client_fn=client_fn, mods=site_mods())
