"""trainer.models: the networks: backbone registry, model building, weights, and the names of
what a model folder holds. Imports nothing of training, inference, serving or audit."""
