"""earth-embed training recipes (not part of the installed library): data, views, losses, pretrain, finetune."""
