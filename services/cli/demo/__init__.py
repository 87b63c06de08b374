"""``mlops demo``: the closed loop, end to end, on the local stack.

The demo plays a product that sends events and asks for predictions, and watches the
platform do the rest by itself:

1. events of a synthetic stream go to ``<prefix>.events.raw``; ingest validates and stores them;
2. one initial train request; the trainer trains, gates and registers version 1 of the run's
   model, the registry promotes it, serving loads it;
3. traffic: every sample is a gRPC ``ModelInfer`` (request id = event id), then its event, label
   included, goes to the raw topic, so the monitor can join the prediction with its label;
4. mid-stream the concept changes; the monitor's detector fires, it asks for one retrain;
   the trainer trains on data since the onset, the new version passes the gates against the
   old one and is promoted; serving swaps it in while traffic continues;
5. the demo reports the figures and exits 0 only if the loop really closed.

Each run trains a model of its own (``demo-classifier-<run>``, or the one ``--model`` names),
so a run never waits out the retrain cooldown an earlier run left on its model.

Runs against the stack ``mlops up`` is running, or starts one of its own and stops it after.

- :mod:`.stream`: the synthetic world (features, labels, the drift);
- :mod:`.spec`: the dataset, the model spec and the events the demo sends;
- :mod:`.watcher`: the platform's topics, followed as the loop runs;
- :mod:`.scenario`: one run, step by step;
- :mod:`.measures`: the figures and the verdict, measured without I/O;
- :mod:`.report`: the report, as a table and as JSON;
- :mod:`.command`: the ``mlops demo`` command.
"""

from services.cli.demo.command import demo

__all__ = ["demo"]
