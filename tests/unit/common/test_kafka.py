"""Which failures the consumer loop retries (the infrastructure's) and which it dead-letters
(the record's): :func:`services.common.kafka.is_transient`, case by case."""

from __future__ import annotations

import grpc
import pytest
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError, NotLeaderForPartitionError
from pymongo.errors import (
    AutoReconnect,
    DuplicateKeyError,
    NetworkTimeout,
    OperationFailure,
    ServerSelectionTimeoutError,
    WriteConcernError,
    WriteError,
)

from services.common.errors import Exhausted, InvalidArgument, NotFound, TooLarge, Unavailable
from services.common.kafka import TransientError, is_transient


def rpc_error(code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details="from the server")


def transaction_conflict(labels: list[str]) -> OperationFailure:
    return OperationFailure("write conflict", code=112, details={"errorLabels": labels})


# (failure, transient?): the infrastructure away or slow is retried; anything about the
# record itself, or a bug, is not. A raw gRPC error (a stub the error model's translating()
# did not wrap) is judged by the same table as the platform error it stands for.
CASES = [
    pytest.param(TransientError("database away"), True, id="TransientError"),
    pytest.param(KafkaConnectionError("broker away"), True, id="kafka-connection"),
    pytest.param(KafkaTimeoutError(), True, id="kafka-timeout"),
    pytest.param(NotLeaderForPartitionError(), True, id="kafka-not-leader"),
    pytest.param(ConnectionRefusedError(111, "refused"), True, id="connection-refused"),
    pytest.param(ConnectionResetError(), True, id="connection-reset"),
    pytest.param(TimeoutError(), True, id="timeout"),
    pytest.param(AutoReconnect("primary stepped down"), True, id="mongo-auto-reconnect"),
    pytest.param(NetworkTimeout("socket timed out"), True, id="mongo-network-timeout"),
    pytest.param(ServerSelectionTimeoutError("no server"), True, id="mongo-no-server"),
    pytest.param(
        WriteConcernError("not enough replicas", code=64, details={}), True, id="mongo-write-concern"
    ),
    pytest.param(transaction_conflict(["TransientTransactionError"]), True, id="mongo-transient-transaction"),
    pytest.param(transaction_conflict([]), False, id="mongo-operation-failure"),
    pytest.param(DuplicateKeyError("E11000 duplicate key", code=11000), False, id="mongo-duplicate-key"),
    pytest.param(WriteError("document too large", code=2), False, id="mongo-write-error"),
    pytest.param(rpc_error(grpc.StatusCode.UNAVAILABLE), True, id="grpc-UNAVAILABLE"),
    pytest.param(rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED), True, id="grpc-DEADLINE_EXCEEDED"),
    pytest.param(rpc_error(grpc.StatusCode.NOT_FOUND), False, id="grpc-NOT_FOUND"),
    pytest.param(rpc_error(grpc.StatusCode.INVALID_ARGUMENT), False, id="grpc-INVALID_ARGUMENT"),
    pytest.param(rpc_error(grpc.StatusCode.PERMISSION_DENIED), False, id="grpc-PERMISSION_DENIED"),
    pytest.param(rpc_error(grpc.StatusCode.INTERNAL), False, id="grpc-INTERNAL"),
    pytest.param(Unavailable("registry away"), True, id="platform-unavailable"),
    pytest.param(Exhausted("queue full"), True, id="platform-exhausted"),
    pytest.param(TooLarge("over the limit"), False, id="platform-too-large"),
    pytest.param(NotFound("no such model"), False, id="platform-not-found"),
    pytest.param(InvalidArgument("not a number", field="amount"), False, id="platform-invalid"),
    pytest.param(ValueError("not a number"), False, id="ValueError"),
    pytest.param(KeyError("amount"), False, id="KeyError"),
    pytest.param(
        UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"), False, id="UnicodeDecodeError"
    ),
    pytest.param(PermissionError(13, "denied"), False, id="PermissionError"),
    pytest.param(RuntimeError("a bug"), False, id="RuntimeError"),
]


@pytest.mark.parametrize(("failure", "transient"), CASES)
def test_is_transient(failure: BaseException, transient: bool) -> None:
    assert is_transient(failure) is transient
