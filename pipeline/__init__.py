"""pipeline: TFRecord shards -> augmented, prefetched (images, labels) batches."""
