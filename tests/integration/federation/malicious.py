"""A site that sends what it should not (tests only): the real site's ClientApp, corrupted.

A run submitted with this ClientApp gives every site this code; a site whose node config
names an ``attack`` trains honestly and then corrupts its reply where a modified site
agent would, after its own guard and its clipping and before secure aggregation masks it:
a NaN update, an update of the wrong shape, or its training rows instead of parameters.
Honest sites behave exactly as the real agent does. Imported by Flower in the
federation's environment.
"""

from __future__ import annotations

import numpy as np
from flwr.app import Context, Message
from flwr.app.message_type import MessageType
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import ClientAppCallable
from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
from flwr.compat.common import recorddict_compat as compat

from services.federation import protocol
from services.federation.site.client_app import SiteClient, client_fn, clipping_mod, secure_aggregation_mod

ATTACK = "attack"


def attack_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    reply = call_next(msg, context)
    attack = str(context.node_config.get(ATTACK, ""))
    if msg.metadata.message_type != MessageType.TRAIN or reply.has_error() or not attack:
        return reply
    fit = compat.recorddict_to_fitres(reply.content, keep_input=True)
    arrays = parameters_to_ndarrays(fit.parameters)
    if attack == "nan":
        arrays[0] = np.full_like(arrays[0], np.nan)
    elif attack == "shape":
        arrays[0] = arrays[0][:, :-1]
    elif attack == "rows":
        instruction = compat.recorddict_to_fitins(msg.content, keep_input=True)
        spec = protocol.read_instruction(dict(instruction.config)).spec
        rows = SiteClient(dict(context.node_config))._data(spec).train
        arrays = [rows.X, (rows.y == rows.y[0]).astype(np.float64)]
    fit.parameters = ndarrays_to_parameters(arrays)
    reply.content = compat.fitres_to_recorddict(fit, keep_input=True)
    return reply


app = ClientApp(client_fn=client_fn, mods=[secure_aggregation_mod, attack_mod, clipping_mod])
