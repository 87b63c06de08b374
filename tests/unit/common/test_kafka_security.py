"""One Kafka security settings group reaches every client the platform builds: aiokafka
(producer, consumer loop, tail reader), librdkafka (serving's prediction log) and faust
(the monitor's streams), each read back from the client object itself."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaException
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from pydantic import SecretStr

from services.common.certificates import issue_local_certificates
from services.common.kafka import ConsumerLoop, TailReader, create_producer
from services.common.kafka_security import KafkaSecurity, KafkaSecurityError, OAuthTokenProvider
from services.common.settings import PlatformSettings
from services.monitor.drift import DriftMonitor
from services.monitor.settings import MonitorSettings
from services.monitor.stream import MonitorStreams
from services.serving.events import PredictionPublisher
from services.serving.settings import ServingSettings
from tests.helpers.keys import KEYS

BOOTSTRAP = "127.0.0.1:1"  # never connected to: the clients are only built


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return issue_local_certificates(tmp_path_factory.mktemp("kafka-ca")).ca


def scram(ca: Path, protocol: str = "SASL_SSL", mechanism: str = "SCRAM-SHA-256") -> dict[str, Any]:
    return {
        "kafka_security_protocol": protocol,
        "kafka_sasl_mechanism": mechanism,
        "kafka_sasl_username": "mlops",
        "kafka_sasl_password": "s3cret-password",
        "kafka_ssl_ca_file": ca,
    }


def aiokafka_client_options(client: Any) -> dict[str, Any]:
    """What an aiokafka client will connect with, read from its ``AIOKafkaClient``."""
    return {
        "security_protocol": client._security_protocol,
        "sasl_mechanism": client._sasl_mechanism,
        "sasl_plain_username": client._sasl_plain_username,
        "sasl_plain_password": client._sasl_plain_password,
        "ssl": client._ssl_context is not None,
    }


async def test_aiokafka_clients_connect_as_the_settings_say(ca: Path) -> None:
    security = KafkaSecurity.from_settings(PlatformSettings(**scram(ca)))
    producer = create_producer(BOOTSTRAP, "test", security=security)
    loop = ConsumerLoop(
        bootstrap_servers=BOOTSTRAP,
        topics=["t"],
        group_id="g",
        handler=lambda records: None,  # type: ignore[arg-type,return-value]
        producer=producer,
        client_id="test",
        security=security,
    )
    reader = TailReader(BOOTSTRAP, ["t"], client_id="test", security=security)
    expected = {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-256",
        "sasl_plain_username": "mlops",
        "sasl_plain_password": "s3cret-password",
        "ssl": True,
    }
    for client in (producer.client, loop._consumer._client, reader._consumer._client):
        assert aiokafka_client_options(client) == expected
    await producer.stop()


async def test_aiokafka_clients_default_to_plaintext() -> None:
    producer = create_producer(BOOTSTRAP, "test")
    assert producer.client._security_protocol == "PLAINTEXT"
    assert producer.client._ssl_context is None
    await producer.stop()


def test_librdkafka_reads_the_same_settings(ca: Path) -> None:
    security = KafkaSecurity.from_settings(PlatformSettings(**scram(ca, mechanism="SCRAM-SHA-512")))
    assert security.librdkafka() == {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "mlops",
        "sasl.password": "s3cret-password",
        "ssl.ca.location": str(ca),
        "ssl.endpoint.identification.algorithm": "https",
    }
    # The prediction log's producer is built with them: librdkafka loads the CA at once.
    PredictionPublisher(BOOTSTRAP, "t", client_id="test", capacity=10, security=security)


def test_the_prediction_log_producer_is_given_the_settings(tmp_path: Path) -> None:
    """librdkafka refuses a CA it cannot read when the producer is built: the settings
    reached it (a producer built without them would not look for the file)."""
    missing = tmp_path / "no-such-ca.pem"
    security = KafkaSecurity(protocol="SSL", ca_file=missing)
    with pytest.raises(KafkaException, match="ssl.ca.location"):
        PredictionPublisher(BOOTSTRAP, "t", client_id="test", capacity=10, security=security)
    PredictionPublisher(BOOTSTRAP, "t", client_id="test", capacity=10)


def test_the_monitor_streams_connect_as_the_settings_say(ca: Path) -> None:
    settings = MonitorSettings(**KEYS.settings(), kafka_bootstrap_servers=BOOTSTRAP, **scram(ca))
    streams = MonitorStreams(settings, DriftMonitor(settings.policy()))
    # What faust's aiokafka driver hands to every consumer and producer it makes.
    options = dict(credentials_to_aiokafka_auth(streams.app.conf.broker_credentials))
    assert isinstance(options.pop("ssl_context"), ssl.SSLContext)
    expected = KafkaSecurity.from_settings(settings).aiokafka()
    expected.pop("ssl_context")
    assert (
        options
        == expected
        == {
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-256",
            "sasl_plain_username": "mlops",
            "sasl_plain_password": "s3cret-password",
        }
    )


@pytest.mark.parametrize("protocol", ["SSL", "SASL_PLAINTEXT"])
def test_faust_gets_each_protocol(ca: Path, protocol: str) -> None:
    security = KafkaSecurity.from_settings(PlatformSettings(**scram(ca, protocol=protocol)))
    options = credentials_to_aiokafka_auth(security.faust_credentials())
    assert options["security_protocol"] == protocol
    assert ("ssl_context" in options and options["ssl_context"] is not None) == (protocol == "SSL")


def test_oauthbearer_reaches_every_client() -> None:
    security = KafkaSecurity.from_settings(
        PlatformSettings(
            kafka_security_protocol="SASL_SSL",
            kafka_sasl_mechanism="OAUTHBEARER",
            kafka_oauth_token_url="https://idp.example/token",
            kafka_oauth_client_id="mlops",
            kafka_oauth_client_secret="client-secret",
            kafka_oauth_scope="kafka",
        )
    )
    assert isinstance(security.aiokafka()["sasl_oauth_token_provider"], OAuthTokenProvider)
    faust_options = credentials_to_aiokafka_auth(security.faust_credentials())
    assert faust_options["sasl_mechanism"] == "OAUTHBEARER"
    assert isinstance(faust_options["sasl_oauth_token_provider"], OAuthTokenProvider)
    librdkafka = security.librdkafka()
    assert librdkafka["sasl.oauthbearer.method"] == "oidc"
    assert librdkafka["sasl.oauthbearer.token.endpoint.url"] == "https://idp.example/token"
    assert librdkafka["sasl.oauthbearer.client.secret"] == "client-secret"
    assert librdkafka["sasl.oauthbearer.scope"] == "kafka"


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"kafka_security_protocol": "SASL_SSL"}, "MLOPS_KAFKA_SASL_USERNAME"),
        (
            {"kafka_security_protocol": "SASL_PLAINTEXT", "kafka_sasl_mechanism": "OAUTHBEARER"},
            "MLOPS_KAFKA_OAUTH_TOKEN_URL",
        ),
    ],
)
def test_incomplete_settings_name_what_is_missing(settings: dict[str, Any], named: str) -> None:
    with pytest.raises(KafkaSecurityError, match=named):
        KafkaSecurity.from_settings(PlatformSettings(**settings))


def test_the_password_is_never_shown() -> None:
    security = KafkaSecurity(
        protocol="SASL_PLAINTEXT", username="mlops", password=SecretStr("s3cret-password")
    )
    assert "s3cret" not in repr(security)


def test_secrets_come_from_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    password = tmp_path / "password"
    password.write_text("from-a-file\n")
    monkeypatch.setenv("MLOPS_KAFKA_SASL_PASSWORD_FILE", str(password))
    monkeypatch.setenv("MLOPS_KAFKA_SASL_USERNAME", "mlops")
    settings = PlatformSettings()
    assert settings.kafka_sasl_password is not None
    assert settings.kafka_sasl_password.get_secret_value() == "from-a-file"
    # The variable itself wins over its file.
    monkeypatch.setenv("MLOPS_KAFKA_SASL_PASSWORD", "from-the-variable")
    assert PlatformSettings().kafka_sasl_password == SecretStr("from-the-variable")


def test_an_unreadable_secret_file_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLOPS_AUTH_PUBLIC_KEYS_FILE", str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="MLOPS_AUTH_PUBLIC_KEYS_FILE"):
        MonitorSettings()


def test_a_list_setting_from_a_file_is_read_as_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    aliases = tmp_path / "aliases"
    aliases.write_text('["production", "shadow"]')
    monkeypatch.setenv("SERVING_SERVED_ALIASES_FILE", str(aliases))
    assert ServingSettings(**KEYS.settings()).served_aliases == ("production", "shadow")
