"""Flavors: the one place the platform tells artifact formats apart.

Every model artifact has a flavor, named by the format string its version stores
(``metadata.artifact.format``). The trainer saves through a flavor, the registry verifies
every upload through one, and serving and the trainer load through one; nothing else
switches on formats. :mod:`services.common.flavors.base` defines the interface.

Adding a flavor is one module implementing :class:`~services.common.flavors.base.Flavor`
(and its :class:`~services.common.flavors.base.Runtime`) and one entry in :data:`FLAVORS`.
Importing this package imports no model library: each flavor imports its own on use.

>>> sorted(FLAVORS)
['lightgbm', 'onnx', 'river-hmac', 'skops', 'xgboost']
>>> flavor("skops").platform
'scikit-learn'
"""

from __future__ import annotations

from collections.abc import Mapping

from services.common.artifacts import ArtifactError, SignatureMismatch
from services.common.errors import InvalidArgument
from services.common.flavors.base import Flavor
from services.common.flavors.lightgbm import LightGBMFlavor
from services.common.flavors.onnx import OnnxFlavor
from services.common.flavors.river import RiverFlavor
from services.common.flavors.skops import SkopsFlavor
from services.common.flavors.xgboost import XGBoostFlavor

FLAVORS: Mapping[str, Flavor] = {
    f.name: f for f in (SkopsFlavor(), RiverFlavor(), XGBoostFlavor(), LightGBMFlavor(), OnnxFlavor())
}
"""Every flavor by name, the registration table."""


class UnknownFlavor(ArtifactError):
    """A format no flavor is registered for."""


def flavor(name: str) -> Flavor:
    """The flavor of artifact format ``name``, or :class:`UnknownFlavor` listing the known ones."""
    found = FLAVORS.get(name)
    if found is None:
        raise UnknownFlavor(f"unknown artifact format {name[:64]!r}; the flavors are {', '.join(FLAVORS)}")
    return found


def flavor_of(model: object) -> Flavor:
    """The flavor that saves ``model`` (a fitted scikit-learn estimator, a booster, a graph ...)."""
    for candidate in FLAVORS.values():
        if candidate.handles(model):
            return candidate
    raise UnknownFlavor(f"no flavor saves a {type(model).__module__}.{type(model).__name__}")


def verify_upload(
    artifact_format: str,
    data: bytes,
    *,
    signature_hmac: str = "",
    signing_key: bytes | None = None,
    field: str = "metadata.artifact",
    signature_field: str = "metadata.signature_hmac",
) -> None:
    """What the registry runs on an uploaded artifact's complete bytes, before a version is
    stored: the flavor's verifier. Raises the platform's :class:`InvalidArgument` naming the
    problem (and ``signature_field`` when it is the signature)."""
    try:
        flavor(artifact_format).verify(data, signature_hmac=signature_hmac, signing_key=signing_key)
    except SignatureMismatch as exc:
        raise InvalidArgument(f"{signature_field}: {exc}", field=signature_field) from None
    except ArtifactError as exc:
        raise InvalidArgument(f"{field}: {exc}", field=field) from None


__all__ = ["FLAVORS", "Flavor", "UnknownFlavor", "flavor", "flavor_of", "verify_upload"]
