"""Protege's model side: model and tokenizer building/loading, FIM templates, mining, distillation, evaluation."""
