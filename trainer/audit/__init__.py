"""trainer.audit: the label audit (the `audit_labels` command's library): features from a
frozen base, then confident learning over a cheap cross-validated head."""
