"""trainer.audit: the data audit (the ``audit_data`` command's library): photos of neither
class, near-duplicates and label errors, from one pass of a frozen pretrained base.

``analysis`` runs it (``features`` once, then ``neither``, ``neighbours`` and ``labels``
on the same vectors); ``findings`` is what it found, ``report`` what it writes."""
