"""Continued pretraining: ``python -m suneung_lit pretrain --config pretrain-demo.yaml``.

A language-model stage before the multiple-choice fine-tune: LoRA on the same base trained with the next-token
loss over a text corpus (``corpus``: files checked before the model loads; ``datamodule``: packed blocks;
``module``: the loss; ``cli``: the wiring). Its exported adapter is where ``fit`` starts with
``--model.init_adapter``.
"""
