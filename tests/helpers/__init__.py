"""Helpers every test suite shares, so each suite does not grow its own copy.

- ``kafka``: reading topics (:class:`~tests.helpers.kafka.TopicReader`, one-shot reads).
- ``apps``: settings for services under test and starting them in process.
- ``datasets``: the orders dataset schema the ingest tests register.
- ``waiting``: polling state that is only reachable by asking for it.
- ``artifacts``: model artifacts saved and loaded through their flavors.
- ``cli``: ``mlops`` commands run in a worker thread against services in the test's process.
- ``keys``: the token keys services under test trust.
- ``problems``: the problem-details body every HTTP API answers an error with.
"""
