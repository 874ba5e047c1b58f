"""Message Batches created at the gateway's ``/v1/messages/batches``.

A caller's batch is a set of ordinary requests on the gateway's own batch route
(``queueing.batching``: half price, Anthropic's batch limits), one ``LLMRequest`` per item: the
same quotas, ``audit_log`` and dashboards as every other call. This model only remembers which
requests make up which batch, under which ``custom_id``, and what the caller did to the batch
(cancel, delete); its status and counts are read from the requests themselves.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models

from queueing.models import ApiToken, LLMRequest


class MessageBatch(models.Model):
    public_id = models.CharField(max_length=64, unique=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="message_batches"
    )
    api_token = models.ForeignKey(
        ApiToken, null=True, blank=True, on_delete=models.SET_NULL, related_name="batches"
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    cancel_initiated_at = models.DateTimeField(null=True, blank=True)
    # Deleted by its caller: gone from the API, while its requests stay the billing record.
    deleted_at = models.DateTimeField(null=True, blank=True)
    # A caller's Idempotency-Key names this batch again, never a second one; the fingerprint
    # is of the requests it came with, so the key reused for another batch is refused.
    idempotency_key = models.CharField(max_length=255, blank=True, default="")
    idempotency_fingerprint = models.CharField(max_length=64, blank=True, default="")

    class Meta:
        verbose_name = "message batch"
        verbose_name_plural = "message batches"
        constraints = [
            models.UniqueConstraint(
                fields=["user", "idempotency_key"],
                condition=~models.Q(idempotency_key=""),
                name="one_batch_per_idempotency_key",
            )
        ]

    def __str__(self) -> str:
        return self.public_id


class MessageBatchItem(models.Model):
    batch = models.ForeignKey(MessageBatch, on_delete=models.CASCADE, related_name="items")
    custom_id = models.CharField(max_length=64)
    request = models.OneToOneField(
        LLMRequest, on_delete=models.CASCADE, related_name="gateway_batch_item"
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["batch", "custom_id"], name="one_custom_id_per_batch")
        ]

    def __str__(self) -> str:
        return f"{self.batch.public_id}/{self.custom_id}"
