"""trainer: batches -> a fine-tuned, partially frozen VGG16 (train, evaluate, predict)."""
