"""The REST mirror's routers, one per concern, and what they share (:mod:`.deps`,
:mod:`.params`, :mod:`.errors`); :mod:`services.registry.http_api` puts them together."""
