"""Fine-tuning: one recipe (setup, train epoch, validate, checkpoint), its data, loss, distributed step and tracking."""
