"""trainer.inference: a trained model -> answers (the `evaluate` and `predict` commands'
library): evaluation, prediction, test-time augmentation, the decision rule. Never imports
trainer.training."""
