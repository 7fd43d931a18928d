"""The Alibaba Cloud international SMS API boundary: signed httpx client, error tree, results, emulator.

Nothing here imports Prefect; a plain script can import the client and send a batch.
"""

from alibaba_sms.client import PreparedBatch, SmsClient
from alibaba_sms.credentials import AccessKey, MissingCredentials
from alibaba_sms.errors import (
    AmbiguousOutcomeError,
    AuthenticationError,
    BusinessError,
    GatewayError,
    PermanentError,
    RetryableError,
    SmsApiError,
    ThrottledError,
    TransportError,
)
from alibaba_sms.models import BatchSendResult, QueryResult, SendResult

__all__ = [
    "AccessKey",
    "AmbiguousOutcomeError",
    "AuthenticationError",
    "BatchSendResult",
    "BusinessError",
    "GatewayError",
    "MissingCredentials",
    "PermanentError",
    "PreparedBatch",
    "QueryResult",
    "RetryableError",
    "SendResult",
    "SmsApiError",
    "SmsClient",
    "ThrottledError",
    "TransportError",
]
